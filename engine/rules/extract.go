package rules

import (
	"bytes"
	"encoding/json"
)

// fieldTree is the set of field paths a rule set reads. Evaluation extracts
// only those fields from a payload instead of decoding all of it: the
// result is the same tree decodeDoc would build, pruned to these paths
// (FuzzExtractMatchesFullDecode pins the equivalence).
type fieldTree struct {
	leaf bool // the path ending here is read
	kids map[string]*fieldTree
}

func (t *fieldTree) add(path []string) {
	n := t
	for _, k := range path {
		if n.kids == nil {
			n.kids = map[string]*fieldTree{}
		}
		c := n.kids[k]
		if c == nil {
			c = &fieldTree{}
			n.kids[k] = c
		}
		n = c
	}
	n.leaf = true
}

func (t *fieldTree) addCond(c *cond) {
	if c == nil {
		return
	}
	if c.path != nil {
		t.add(c.path)
	}
	for _, k := range c.kids {
		t.addCond(k)
	}
}

// extract returns payload's referenced fields as nested maps, or nil when
// the payload is not valid JSON (every field is then missing, as with
// decodeDoc).
func (t *fieldTree) extract(payload []byte) any {
	if !json.Valid(payload) {
		return nil
	}
	s := scan{b: payload}
	s.ws()
	if s.b[s.i] != '{' {
		return nil // a top-level non-object has no fields
	}
	return s.object(t)
}

// scan walks a payload json.Valid already accepted, so it needs no error
// handling of its own.
type scan struct {
	b []byte
	i int
}

// notObject stands for a value that is not an object on the way to a read
// path: lookups through it find nothing, as through any non-object.
type notObject struct{}

func (s *scan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scan) object(t *fieldTree) map[string]any {
	m := map[string]any{}
	s.i++ // '{'
	s.ws()
	if s.b[s.i] == '}' {
		s.i++
		return m
	}
	for {
		s.ws()
		start := s.i
		s.skipString()
		raw := s.b[start+1 : s.i-1]
		var key string
		var child *fieldTree
		if plain(raw) {
			child = t.kids[string(raw)]
			if child != nil {
				key = string(raw)
			}
		} else if json.Unmarshal(s.b[start:s.i], &key) == nil {
			child = t.kids[key]
		}
		s.ws()
		s.i++ // ':'
		s.ws()
		v := s.i
		switch {
		case child == nil:
			s.skip()
		case child.leaf:
			s.skip()
			m[key] = decodeSpan(s.b[v:s.i])
		case s.b[v] == '{':
			m[key] = s.object(child)
		default:
			s.skip()
			m[key] = notObject{} // a later duplicate key replaces an earlier one
		}
		s.ws()
		if s.b[s.i] == ',' {
			s.i++
			continue
		}
		s.i++ // '}'
		return m
	}
}

// plain says whether a string's raw bytes mean themselves: no escapes and
// only ASCII (encoding/json rewrites invalid UTF-8, so leave that to it).
func plain(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

func (s *scan) skipString() {
	s.i++ // opening quote
	for {
		switch s.b[s.i] {
		case '\\':
			s.i += 2
		case '"':
			s.i++
			return
		default:
			s.i++
		}
	}
}

func (s *scan) skip() {
	switch s.b[s.i] {
	case '"':
		s.skipString()
	case '{', '[':
		depth := 0
		for {
			switch s.b[s.i] {
			case '"':
				s.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.i++
			if depth == 0 {
				return
			}
		}
	default:
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}

// decodeSpan decodes one valid JSON value as decodeDoc would.
func decodeSpan(span []byte) any {
	switch span[0] {
	case 't':
		return true
	case 'f':
		return false
	case 'n':
		return nil
	case '"':
		if raw := span[1 : len(span)-1]; plain(raw) {
			return string(raw)
		}
		var str string
		_ = json.Unmarshal(span, &str)
		return str
	case '{', '[':
		dec := json.NewDecoder(bytes.NewReader(span))
		dec.UseNumber()
		var v any
		_ = dec.Decode(&v)
		return v
	}
	return json.Number(span)
}
