package rules

import (
	"fmt"
	"testing"
)

// benchRules builds n rules: a mix of comparisons, membership, presence
// and a boolean combination, as an ingest filter would have.
func benchRules(b *testing.B, n int) *Set {
	js := "["
	for i := range n {
		if i > 0 {
			js += ","
		}
		switch i % 4 {
		case 0:
			js += fmt.Sprintf(`{"name":"r%d","require":{"field":"speed","op":"le","value":%d}}`, i, 1000+i)
		case 1:
			js += fmt.Sprintf(`{"name":"r%d","require":{"field":"kind","op":"in","values":["telemetry","log","r%d"]}}`, i, i)
		case 2:
			js += fmt.Sprintf(`{"name":"r%d","require":{"field":"device.id","op":"exists"}}`, i)
		default:
			js += fmt.Sprintf(`{"name":"r%d","when":{"field":"kind","op":"eq","value":"telemetry"},"require":{"and":[{"field":"speed","op":"ge","value":0},{"not":{"field":"device.id","op":"eq","value":"r%d"}}]}}`, i, i)
		}
	}
	return mustParse(b, js+"]")
}

var benchPayload = []byte(`{"kind":"telemetry","speed":120,"ts":1732579200123456789,"device":{"id":"veh-0042","fw":"1.2.3"}}`)

func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			e := NewEngine(benchRules(b, n), Options{})
			batch := [][]byte{benchPayload}
			b.ReportAllocs()
			for b.Loop() {
				if v := e.Evaluate(batch); v.Kind != Accept {
					b.Fatal(v)
				}
			}
		})
	}
}

func BenchmarkEvaluateRateLimited(b *testing.B) {
	e := NewEngine(mustParse(b, `[{"name":"k","rateLimit":{"key":"device.id","max":18446744073709551615,"window":"1h"}}]`), Options{})
	batch := [][]byte{benchPayload}
	b.ReportAllocs()
	for b.Loop() {
		if v := e.Evaluate(batch); v.Kind != Accept {
			b.Fatal(v)
		}
	}
}
