package tlsflags_test

import (
	"fmt"

	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

func ExampleSet_ExtensionData() {
	data, _ := tlsflags.Must(tlsflags.RequestMTLS).ExtensionData()
	fmt.Printf("% x\n", data)
	// Output: 0b 00 00 00 00 00 00 00 00 00 00 01
}

func ExampleParse() {
	s, err := tlsflags.Parse([]byte{0x03, 0x28, 0x00, 0x80})
	fmt.Println(s, err)
	_, err = tlsflags.Parse([]byte{0x02, 0x01, 0x00})
	fmt.Println(err)
	// Output:
	// [3 5 23] <nil>
	// tlsflags: malformed tls_flags extension
}

func ExampleParseList() {
	s, _ := tlsflags.ParseList("8,170,0x0c")
	fmt.Println(s, s.Has(tlsflags.RequestMTLS))
	// Output: [8 12 170] false
}
