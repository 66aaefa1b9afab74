package bester

// The client's fast lane against encoding/json: scanIn either declines or reads exactly what
// parseInFull reads (vectors, the frames of PROTOCOL.md, odd and generated frames, and
// go test -fuzz FuzzScanIn on arbitrary bytes); requestFrame writes exactly EncodeFrame's bytes.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func checkIn(t *testing.T, body []byte) bool {
	t.Helper()
	if !utf8.Valid(body) {
		return false // parseIn refuses it before either path
	}
	fast, ok := scanIn(body)
	if !ok {
		return false
	}
	full, err := parseInFull(body)
	if err != nil {
		t.Fatalf("the fast lane read %q, which the full path refuses: %v", body, err)
	}
	if !reflect.DeepEqual(fast, full) {
		t.Fatalf("%q:\nfast %#v\nfull %#v", body, fast, full)
	}
	return true
}

var serverFrames = []string{
	`{"header":{"status":"ok","kind":"reply","id":"42","type":"echo"},"data":{"hello":"world"}}`,
	`{"header":{"status":"error","kind":"reply","id":"42"},"data":{"error":"no handler for type \"nope\"","code":"unknown_type"}}`,
	`{"header":{"status":"ok","kind":"push","type":"chat","from":{"user":"alice","server":"besterd"}},"data":{"room":"r","from":"alice","text":"hi"}}`,
	`{"header":{"status":"ok","kind":"push","type":"chat","from":{"user":"alice","server":"besterd","info":{"plan":"pro"}}},"data":null}`,
	`{"header":{"status":"ok","kind":"reply","id":"9","type":"chat","delivered":["alice","bob"],"offline":["carol"]},"data":"hi"}`,
	`{"header":{"status":"ok","kind":"reply","id":"9","type":"chat","delivered":[],"offline":[]},"data":"hi"}`,
	`{"header":{"status":"ok","kind":"reply","id":"1","type":"chat","servers":{"b":{"status":"ok","delivered":["bob"],"offline":[]}}},"data":null}`,
	`{"header":{"status":"ok","kind":"redirect","id":"1"},"data":{"url":"bester+wss://s1.example:443","token":"v1.x"}}`,
	`{"header":{"status":"error","kind":"reply"},"data":{"error":"closed by an administrator","code":"kicked"}}`,
	`{"header":{"status":"ok","kind":"reply","id":"1"}}`,
	`{"header":{"status":"ok","kind":"reply","id":null},"data":1}`,
	`{"header":{"status":"ok","kind":"reply","id":"1","ID":"2"},"data":1}`,
	`{"header":{"status":"ok","kind":"reply","id":"1","id":"2"},"data":1}`,
	`{"header":{"status":"ok","kind":"reply","id":"\u0031"},"data":1}`,
	`{"header":{"status":"ok","kind":"reply","id":"1","next":[1,{"a":"\u00e9"}]},"data":[1,2 , 3],"more":1}`,
	` {"header":{"status":"ok","kind":"reply","id":"1"},"data":1}`,
	`{"header":{"status":"ok","kind":"reply","id":"1"},"data":1} `,
	`{"header":{"status":"ok","kind":"reply","id":"1"},"data":1}}`,
	`{"header":{"status":"ok","kind":"reply","id":"1"},"data":1e}`,
	`{"header":{"status":"ok","kind":"reply","id":"1","delivered":null},"data":1}`,
	`{"header":{"status":"ok","kind":"reply","id":"1","delivered":["a",1]},"data":1}`,
	`{"header":{"status":"ok","kind":"reply","id":"1","from":{"user":"a"}},"data":{"x":"\ud800"}}`,
	`{"header":null,"data":1}`, `{}`, `[]`, `null`, ``, `{"data":1}`,
}

func vectorBodies(t testing.TB) [][]byte {
	var out [][]byte
	for _, name := range []string{"messages.json", "frames.json"} {
		text, err := os.ReadFile(filepath.Join("..", "..", "protocol", "vectors", name))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Cases, Valid []struct{ JSON string }
		}
		if err := json.Unmarshal(text, &v); err != nil {
			t.Fatal(err)
		}
		for _, c := range append(v.Cases, v.Valid...) {
			out = append(out, []byte(c.JSON))
		}
	}
	return out
}

func TestScanInMatchesEncodingJSON(t *testing.T) {
	for _, b := range vectorBodies(t) {
		checkIn(t, b)
	}
	took := 0
	for _, s := range serverFrames {
		if checkIn(t, []byte(s)) {
			took++
		}
	}
	if took < 8 {
		t.Fatalf("the fast lane took only %d of the usual frames", took)
	}
	r := rand.New(rand.NewSource(17))
	pick := func(s ...string) string { return s[r.Intn(len(s))] }
	took = 0
	for i := 0; i < 20000; i++ {
		var parts []string
		for _, p := range []string{`"status":` + pick(`"ok"`, `"error"`, `1`), `"kind":` + pick(`"reply"`, `"push"`, `null`),
			`"id":` + pick(`"1"`, `"a b"`, `"\n"`, `null`), `"type":` + pick(`"echo"`, `"é"`, `""`),
			`"delivered":` + pick(`[]`, `["a","b"]`, `[ "a" ]`), `"from":` + pick(`{"user":"a"}`, `{"info":[1]}`, `{}`),
			pick(`"Kind":"x"`, `"x":{"y":[]}`, `"é":1`, `"servers":{}`), pick(`"id":"2"`, `"q":true`)} {
			if r.Intn(4) > 0 {
				parts = append(parts, pick("", " ")+p)
			}
		}
		r.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
		body := `{"header":{` + strings.Join(parts, ",") + `}` + pick(`,"data":{"n":1,"pad":"xx"}`, `,"data":[1, 2]`, ``, `,"data":"\u00e9"`) + `}`
		if r.Intn(10) == 0 {
			j := r.Intn(len(body))
			body = body[:j] + pick("{", "}", ",", `"`, ":", "0") + body[j+1:]
		}
		if checkIn(t, []byte(body)) {
			took++
		}
	}
	if took < 1000 {
		t.Fatalf("the fast lane took only %d of 20000 generated frames (want 1000)", took)
	}
}

func FuzzScanIn(f *testing.F) {
	for _, b := range vectorBodies(f) {
		f.Add(b)
	}
	for _, s := range serverFrames {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkIn(t, body) })
}

type htmlish struct{ S string }

func (h htmlish) MarshalJSON() ([]byte, error) { return []byte(` { "s" : "` + h.S + `" } `), nil }

func TestRequestFrameIsEncodeFramesBytes(t *testing.T) {
	datas := []any{nil, 1, "<a&b>", map[string]any{"n": 1, "pad": strings.Repeat("x", 80)}, []int{1, 2},
		json.RawMessage(` { "a" : [1, 2] } `), json.RawMessage(`{"a"`), json.RawMessage(nil), json.RawMessage(`"\u2028"`),
		htmlish{"x"}, make(chan int), strings.Repeat("y", MaxFrame), "\u2028 é"}
	for _, typ := range []string{"echo", "a\"b", "é", "x\u2028", "", "bad\xff"} {
		for _, d := range datas {
			got, gerr := requestFrame(12, typ, d)
			want, werr := slowRequestFrame(12, typ, d)
			if !bytes.Equal(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
				t.Fatalf("%q %T: fast %.200q %v, EncodeFrame %.200q %v", typ, d, got, gerr, want, werr)
			}
		}
	}
}
