package httpsig

import (
	"bytes"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dunglas/httpsfv"
)

// TestStructuredFieldTests runs the HTTP working group's structured field
// tests (third_party/structured-field-tests) for the types the package
// reads and writes through httpsfv: Signature-Input and Signature are
// dictionaries (parameters, inner lists, integers, strings, byte
// sequences), Signature-Agent a dictionary of strings, the proxy's
// Req-Mtls-Cert-Requested a boolean. Each case parses to its expected
// value, or fails where it must; what parses serializes to its canonical
// form.
func TestStructuredFieldTests(t *testing.T) {
	files, err := filepath.Glob("../../third_party/structured-field-tests/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var cases []struct {
			Name       string          `json:"name"`
			Raw        []string        `json:"raw"`
			HeaderType string          `json:"header_type"`
			Expected   json.RawMessage `json:"expected"`
			MustFail   bool            `json:"must_fail"`
			CanFail    bool            `json:"can_fail"`
			Canonical  []string        `json:"canonical"`
		}
		if err := json.Unmarshal(data, &cases); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, c := range cases {
			t.Run(strings.TrimSuffix(filepath.Base(file), ".json")+"/"+c.Name, func(t *testing.T) {
				var v httpsfv.StructuredFieldValue
				var got string
				switch c.HeaderType {
				case "item":
					it, perr := httpsfv.UnmarshalItem(c.Raw)
					err, v, got = perr, it, sfItem(it)
				case "dictionary":
					d, perr := httpsfv.UnmarshalDictionary(c.Raw)
					err = perr
					if perr == nil {
						v, got = d, sfDict(d)
					}
				default:
					t.Skipf("header type %s: not one the package reads", c.HeaderType)
				}
				if c.MustFail {
					if err == nil {
						t.Fatalf("%q parsed as %s; must fail", c.Raw, got)
					}
					return
				}
				if err != nil {
					if c.CanFail {
						return
					}
					t.Fatalf("%q: %v", c.Raw, err)
				}
				want, werr := expectedSF(c.HeaderType, c.Expected)
				if werr != nil {
					t.Fatalf("expected value: %v", werr)
				}
				if got != want {
					t.Fatalf("%q parsed as\n  %s\nwant\n  %s", c.Raw, got, want)
				}
				canonical := c.Canonical
				if canonical == nil {
					canonical = c.Raw
				}
				s, err := httpsfv.Marshal(v)
				if err != nil {
					t.Fatalf("serialize %s: %v", got, err)
				}
				if w := strings.Join(canonical, ", "); s != w {
					t.Fatalf("%q serialized as %q, want %q", c.Raw, s, w)
				}
			})
		}
	}
}

// The values, parsed or expected, are compared as one text each:
// dictionaries and parameters as ordered name=value lists, items as
// value;params, inner lists in parentheses, bare items by type.

func sfDict(d *httpsfv.Dictionary) string {
	var parts []string
	for _, n := range d.Names() {
		m, _ := d.Get(n)
		parts = append(parts, n+"="+sfMember(m))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func sfMember(m httpsfv.Member) string {
	if il, ok := m.(httpsfv.InnerList); ok {
		items := make([]string, len(il.Items))
		for i, it := range il.Items {
			items[i] = sfItem(it)
		}
		return "(" + strings.Join(items, " ") + ")" + sfParams(il.Params)
	}
	return sfItem(m.(httpsfv.Item))
}

func sfItem(it httpsfv.Item) string { return sfBare(it.Value) + sfParams(it.Params) }

func sfParams(p *httpsfv.Params) string {
	var b strings.Builder
	if p == nil {
		return ""
	}
	for _, n := range p.Names() {
		v, _ := p.Get(n)
		b.WriteString(";" + n + "=" + sfBare(v))
	}
	return b.String()
}

func sfBare(v any) string {
	switch v := v.(type) {
	case int64:
		return "int:" + strconv.FormatInt(v, 10)
	case float64:
		return "dec:" + strconv.FormatFloat(v, 'f', 3, 64)
	case string:
		return "str:" + strconv.Quote(v)
	case httpsfv.Token:
		return "tok:" + string(v)
	case []byte:
		return fmt.Sprintf("bin:%x", v)
	case bool:
		return "bool:" + strconv.FormatBool(v)
	}
	return fmt.Sprintf("%T:%v", v, v)
}

// expectedSF renders a test's expected value, in either of the suite's
// forms (members and parameters as a JSON object, or as an array of
// name-value pairs).
func expectedSF(headerType string, raw json.RawMessage) (string, error) {
	v, err := decodeOrdered(raw)
	if err != nil {
		return "", err
	}
	switch headerType {
	case "item":
		return expItem(v)
	case "dictionary":
		pairs, err := expPairs(v)
		if err != nil {
			return "", err
		}
		var parts []string
		for _, p := range pairs {
			m, err := expMember(p.v)
			if err != nil {
				return "", err
			}
			parts = append(parts, p.k+"="+m)
		}
		return "{" + strings.Join(parts, " ") + "}", nil
	}
	return "", fmt.Errorf("header type %s", headerType)
}

type jsonPair struct {
	k string
	v any
}

// jsonObject is a JSON object with its members in order.
type jsonObject []jsonPair

func decodeOrdered(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return decodeValue(dec)
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		var o jsonObject
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			o = append(o, jsonPair{k.(string), v})
		}
		_, err := dec.Token()
		return o, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token()
		return a, err
	}
	return tok, nil
}

func expPairs(v any) ([]jsonPair, error) {
	switch v := v.(type) {
	case jsonObject:
		return v, nil
	case []any:
		var out []jsonPair
		for _, e := range v {
			kv, ok := e.([]any)
			if !ok || len(kv) != 2 {
				return nil, fmt.Errorf("pair %v", e)
			}
			k, ok := kv[0].(string)
			if !ok {
				return nil, fmt.Errorf("name %v", kv[0])
			}
			out = append(out, jsonPair{k, kv[1]})
		}
		return out, nil
	}
	return nil, fmt.Errorf("members %v", v)
}

func expParams(v any) (string, error) {
	pairs, err := expPairs(v)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, p := range pairs {
		bare, err := expBare(p.v)
		if err != nil {
			return "", err
		}
		b.WriteString(";" + p.k + "=" + bare)
	}
	return b.String(), nil
}

func expMember(v any) (string, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return "", fmt.Errorf("member %v", v)
	}
	list, ok := a[0].([]any)
	if !ok {
		return expItem(v)
	}
	items := make([]string, len(list))
	for i, e := range list {
		s, err := expItem(e)
		if err != nil {
			return "", err
		}
		items[i] = s
	}
	p, err := expParams(a[1])
	return "(" + strings.Join(items, " ") + ")" + p, err
}

func expItem(v any) (string, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return "", fmt.Errorf("item %v", v)
	}
	bare, err := expBare(a[0])
	if err != nil {
		return "", err
	}
	p, err := expParams(a[1])
	return bare + p, err
}

func expBare(v any) (string, error) {
	switch v := v.(type) {
	case json.Number:
		if strings.ContainsAny(v.String(), ".eE") {
			f, err := v.Float64()
			return sfBare(f), err
		}
		i, err := v.Int64()
		return sfBare(i), err
	case string:
		return sfBare(v), nil
	case bool:
		return sfBare(v), nil
	case jsonObject:
		var typ, val any
		for _, p := range v {
			switch p.k {
			case "__type":
				typ = p.v
			case "value":
				val = p.v
			}
		}
		s, _ := val.(string)
		switch typ {
		case "token":
			return sfBare(httpsfv.Token(s)), nil
		case "binary":
			b, err := base32.StdEncoding.DecodeString(s)
			return sfBare(b), err
		}
		return "", fmt.Errorf("type %v", typ)
	}
	return "", fmt.Errorf("bare item %v", v)
}
