package wire

import (
	"bufio"
	"io"
	"net"
	"testing"
)

// BenchmarkSessionStream streams 64 KiB packets through a sealed session
// over loopback TCP (writer behind a 64 KiB bufio.Writer, reader behind a
// bufio.Reader, as the protocols use them), against the same without a
// session.
func BenchmarkSessionStream(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		name := "plain"
		if sealed {
			name = "sealed"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.6.2:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					accepted <- nil
					return
				}
				if sealed {
					sc, err := ServerSession{}.Accept(c)
					if err != nil {
						accepted <- nil
						return
					}
					accepted <- sc
					return
				}
				accepted <- c
			}()
			cc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			var w net.Conn = cc
			if sealed {
				if w, err = (ClientSession{Subprotocol: 7}).Handshake(cc); err != nil {
					b.Fatal(err)
				}
			}
			r := <-accepted
			if r == nil {
				b.Fatal("accept failed")
			}
			defer r.Close()
			defer cc.Close()
			payload := make([]byte, MaxPlainPayload-FrameLenSize)
			done := make(chan error, 1)
			go func() {
				br := bufio.NewReaderSize(r, 64<<10)
				buf := make([]byte, HeaderSize+MaxPlainPayload)
				for i := 0; i < b.N; i++ {
					if _, err := io.ReadFull(br, buf[:HeaderSize]); err != nil {
						done <- err
						return
					}
					h, err := DecodeHeader(buf[:HeaderSize])
					if err != nil {
						done <- err
						return
					}
					if _, err := io.ReadFull(br, buf[HeaderSize:HeaderSize+int(h.PayloadLen)]); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			bw := bufio.NewWriterSize(w, 64<<10)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			var pkt []byte
			for i := 0; i < b.N; i++ {
				pkt, _ = BuildPacket(pkt[:0], Header{Subprotocol: 7, Sequence: uint64(i + 1)}, [][]byte{payload}, MaxPlainPayload)
				if _, err := bw.Write(pkt); err != nil {
					b.Fatal(err)
				}
			}
			if err := bw.Flush(); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
