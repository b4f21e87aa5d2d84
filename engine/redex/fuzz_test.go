package redex

import (
	"bytes"
	"hash/crc32"
	"testing"
)

func validSegmentImage() []byte {
	b := appendSegHeader(nil, 7)
	b = appendFrame(b, 7, 100, 0, crcOf([]byte("hello")), []byte("hello"))
	b = appendFrame(b, 8, 101, FlagInline, crcOf([]byte("12345678")), []byte("12345678"))
	b = appendFrame(b, 9, 102, FlagTombstone, crcOf(nil), nil)
	return b
}

func crcOf(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// FuzzDecodeSegment feeds arbitrary bytes to the segment reader: it must
// return an error for bad input, never panic, and whatever it accepts must
// re-encode to exactly the valid prefix it reported. After an error the
// corruption check (intactFrameAfter) must not panic either, and any frame
// it reports must decode.
func FuzzDecodeSegment(f *testing.F) {
	good := validSegmentImage()
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(good[:segHeaderSize+5])
	f.Add([]byte{})
	f.Add([]byte(segMagic))
	flipped := bytes.Clone(good)
	flipped[segHeaderSize+9] ^= 0x80 // length field
	f.Add(flipped)
	midFlip := bytes.Clone(good)
	midFlip[segHeaderSize+frameHeaderSize+1] ^= 0x01 // first payload, intact frames follow
	f.Add(midFlip)
	f.Fuzz(func(t *testing.T, data []byte) {
		base, frames, valid, err := decodeSegment(data, 1<<16, false)
		if valid < 0 || valid > len(data) {
			t.Fatalf("valid prefix %d outside [0,%d]", valid, len(data))
		}
		if err == nil && valid != len(data) {
			t.Fatalf("no error but only %d of %d bytes valid", valid, len(data))
		}
		if err != nil {
			// Recovery's corruption check: whatever it reports as an
			// intact frame after the damage must decode as one.
			from, want := valid, base+uint64(len(frames))
			if valid == 0 {
				from, want = segHeaderSize, 0
			}
			if at, seq, ok := intactFrameAfter(data, from, want, 1<<16, false); ok {
				if at < from || seq < want {
					t.Fatalf("intact frame at %d (seq %d) before the damage at %d (seq %d)", at, seq, from, want)
				}
				if _, _, ferr := decodeFrame(data[at:], seq, 1<<16, false); ferr != nil {
					t.Fatalf("reported intact frame at %d does not decode: %v", at, ferr)
				}
			}
		}
		if valid == 0 {
			if len(frames) != 0 {
				t.Fatal("frames decoded from an invalid header")
			}
			return
		}
		re := appendSegHeader(nil, base)
		for i, fr := range frames {
			if fr.seq != base+uint64(i) {
				t.Fatalf("frame %d has seq %d, base %d", i, fr.seq, base)
			}
			re = appendFrame(re, fr.seq, fr.ts, fr.flags, fr.crc, fr.payload)
		}
		if !bytes.Equal(re, data[:valid]) {
			t.Fatal("accepted frames do not re-encode to the valid prefix")
		}
		// The valid prefix on its own decodes cleanly.
		if _, again, v2, err := decodeSegment(data[:valid], 1<<16, false); err != nil || v2 != valid || len(again) != len(frames) {
			t.Fatalf("valid prefix does not decode cleanly: %v", err)
		}
	})
}
