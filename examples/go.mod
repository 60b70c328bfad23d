module github.com/req-mtls/req-mtls/examples

go 1.26.0

require github.com/req-mtls/req-mtls v0.0.0

require (
	github.com/andybalholm/brotli v1.0.6 // indirect
	github.com/fsnotify/fsnotify v1.9.0 // indirect
	github.com/klauspost/compress v1.17.4 // indirect
	github.com/pires/go-proxyproto v0.8.1 // indirect
	github.com/refraction-networking/utls v1.8.2 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)

replace github.com/req-mtls/req-mtls => ../
