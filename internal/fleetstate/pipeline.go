package fleetstate

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds the calls sent to Redis in one pipeline.
const maxBatch = 128

// maxDirect is how many calls may be out before more wait for a batch.
const maxDirect = 4

// queueLen bounds the calls waiting for the pipeline: past it, a call is
// answered locally at once (Redis is not keeping up).
const queueLen = 1024

var errQueueFull = errors.New("too many Redis calls waiting")

// A pipeline sends the Redis calls of concurrent requests together. A
// call (a script: the nonce check, a token) made while fewer than
// maxDirect others are out is made at once by its caller. One made while
// more are out waits in a queue; one goroutine takes all that are
// waiting, up to maxBatch, sends them in one write (a pipeline of
// EVALSHA), reads their answers and hands each back, then takes the next
// batch. A few requests at a time, every call is made at once, with no
// handoff (batches of one or two cost more than they save); under load,
// the calls that arrive while others are out go together, so that a
// write and a read to Redis serve many requests: the busier the server,
// the fewer system calls per request.
type pipeline struct {
	client   redis.UniversalClient
	timeout  time.Duration
	queue    chan *queued
	inflight atomic.Int32 // calls and batches out
	sends    atomic.Int64 // sends to Redis (a call made at once, or a batch: Redis.Sent)
	calls    atomic.Int64 // the calls they carried
	stop     chan struct{}
	closing  sync.Once
	done     chan struct{}
}

// queued is one call and, once done is closed, its answer.
type queued struct {
	ctx    context.Context // the caller's: done, it no longer waits
	script *redis.Script
	keys   []string
	args   []any
	res    []int64
	err    error
	done   chan struct{}
}

func newPipeline(client redis.UniversalClient, timeout time.Duration) *pipeline {
	p := &pipeline{client: client, timeout: timeout, queue: make(chan *queued, queueLen),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// close stops the pipeline's goroutine; calls still queued are not
// answered (their callers time out).
func (p *pipeline) close() {
	p.closing.Do(func() { close(p.stop) })
	<-p.done
}

// run sends the batches, one at a time.
func (p *pipeline) run() {
	defer close(p.done)
	batch := make([]*queued, 0, maxBatch)
	for {
		select {
		case q := <-p.queue:
			batch = append(batch[:0], q)
		case <-p.stop:
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case q := <-p.queue:
				batch = append(batch, q)
			default:
				break fill
			}
		}
		// Calls whose callers stopped waiting (Redis slow, the queue
		// long) are not made: they were answered locally.
		batch = slices.DeleteFunc(batch, func(q *queued) bool { return q.ctx.Err() != nil })
		if len(batch) > 0 {
			p.send(batch)
		}
		clear(batch[:cap(batch)])
		select {
		case <-p.stop:
			return
		default:
		}
	}
}

// send runs a batch and answers each of its calls.
func (p *pipeline) send(batch []*queued) {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	p.sends.Add(1)
	p.calls.Add(int64(len(batch)))
	// Bounded by the last of its callers' deadlines: none waits longer.
	deadline := time.Now().Add(p.timeout)
	last := time.Time{}
	for _, q := range batch {
		if d, ok := q.ctx.Deadline(); ok && d.After(last) {
			last = d
		} else if !ok {
			last = deadline
		}
	}
	if last.Before(deadline) {
		deadline = last
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if len(batch) == 1 {
		q := batch[0]
		q.res, q.err = q.script.Run(ctx, p.client, q.keys, q.args...).Int64Slice()
		close(q.done)
		return
	}
	pipe := p.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, q := range batch {
		cmds[i] = pipe.EvalSha(ctx, q.script.Hash(), q.keys, q.args...)
	}
	pipe.Exec(ctx) // each command holds its own error
	// Redis lost its scripts (restarted, or SCRIPT FLUSH): a call that
	// met NOSCRIPT did nothing; each script is loaded once and those
	// calls sent again, together.
	var again []int
	loaded := map[*redis.Script]bool{}
	for i, q := range batch {
		if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
			again = append(again, i)
			if !loaded[q.script] {
				loaded[q.script] = true
				q.script.Load(ctx, p.client)
			}
		}
	}
	if len(again) > 0 {
		pipe := p.client.Pipeline()
		for _, i := range again {
			q := batch[i]
			cmds[i] = pipe.EvalSha(ctx, q.script.Hash(), q.keys, q.args...)
		}
		pipe.Exec(ctx)
	}
	for i, q := range batch {
		q.res, q.err = cmds[i].Int64Slice()
		close(q.done)
	}
}

// do runs script with keys and args, at once when fewer than maxDirect
// calls are out or else in the next batch, and returns its answer, or
// ctx's error if that comes first.
func (p *pipeline) do(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]int64, error) {
	for n := p.inflight.Load(); n < maxDirect; n = p.inflight.Load() {
		if p.inflight.CompareAndSwap(n, n+1) {
			defer p.inflight.Add(-1)
			p.sends.Add(1)
			p.calls.Add(1)
			return script.Run(ctx, p.client, keys, args...).Int64Slice()
		}
	}
	q := &queued{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	select {
	case p.queue <- q:
	default:
		return nil, errQueueFull
	}
	select {
	case <-q.done:
		return q.res, q.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
