// Package bufpool is the copy buffers that the proxies' ReverseProxies
// share (httputil.BufferPool): made once and reused, instead of 32 KiB
// allocated for each request, most of the bytes a proxied request
// allocates.
package bufpool

import "sync"

// Copy is the pool of 32 KiB copy buffers.
var Copy = &Pool{sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

// A Pool is an httputil.BufferPool.
type Pool struct{ p sync.Pool }

func (b *Pool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *Pool) Put(x []byte) { b.p.Put(&x) }
