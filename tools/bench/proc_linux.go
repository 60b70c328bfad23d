package main

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel send sig to the process started by cmd
// when the bench dies, even by SIGKILL, so that no server outlives it.
func setDeathSignal(cmd *exec.Cmd, sig syscall.Signal) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: sig}
}
