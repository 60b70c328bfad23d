//go:build !linux

package main

import (
	"errors"
	"time"
)

func pingRedis(string, int) (time.Duration, error) {
	return 0, errors.New("ping-redis: Linux only")
}
