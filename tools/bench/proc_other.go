//go:build !linux

package main

import (
	"os/exec"
	"syscall"
)

func setDeathSignal(*exec.Cmd, syscall.Signal) {}
