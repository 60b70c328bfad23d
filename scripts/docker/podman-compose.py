"""Runs the installed podman-compose with two fixes for Debian 12's 1.0.3.

scripts/docker-test.sh drives docker-compose.yml through this file, with the
interpreter of the podman-compose command (#!/usr/bin/python3 on Debian):

 1. network_mode: 1.0.3 passes `--network host` and also the project's
    default network (`--net PROJECT_default --network-alias SERVICE`), which
    podman rejects: "cannot set multiple networks without bridge network
    mode" (containers/podman-compose issues 397 and 1186; later versions
    give a service with network_mode no other network). Here such a service
    gets only its network_mode, as with docker compose, and no network is
    created for it.
 2. run: 1.0.3 exits 0 whatever the one-off container did; here `run`
    exits with the container's status, as `docker compose run` does.

Any other version runs unchanged.
"""

import sys

import podman_compose as pc

if pc.__version__ == "1.0.3":
    _get_net_args = pc.get_net_args
    _assert_cnt_nets = pc.assert_cnt_nets

    def get_net_args(compose, cnt):
        if cnt.get("network_mode"):
            return []  # container_to_args already added --network MODE
        return _get_net_args(compose, cnt)

    def assert_cnt_nets(compose, cnt):
        if cnt.get("network_mode"):
            return
        _assert_cnt_nets(compose, cnt)

    pc.get_net_args = get_net_args
    pc.assert_cnt_nets = assert_cnt_nets

    _compose_run = pc.podman_compose.commands["run"]

    def compose_run(compose, args):
        statuses = []
        podman_run = compose.podman.run

        def recording_run(podman_args, cmd="", cmd_args=None, **kw):
            p = podman_run(podman_args, cmd, cmd_args, **kw)
            if cmd == "run" and p is not None and p.returncode is not None:
                statuses.append(p.returncode)
            return p

        compose.podman.run = recording_run
        try:
            _compose_run(compose, args)
        finally:
            compose.podman.run = podman_run
        # The one-off container is the last `podman run`; dependencies
        # started before it run detached.
        if statuses and statuses[-1] != 0:
            sys.exit(statuses[-1])

    compose_run.__dict__.update(_compose_run.__dict__)
    pc.podman_compose.commands["run"] = compose_run

if __name__ == "__main__":
    pc.main()
