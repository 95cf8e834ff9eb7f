"""What the probe pods can do, checked once per cluster backend in a pod of the probe
image: which probe clients the image has, and whether the nodes' kernel has SCTP.

SCTP is a kernel module that kind nodes, as containers, share with their host; a
runner without it (GitHub's Azure kernels ship it in linux-modules-extra) gives
"protocol not supported" to every SCTP socket. The check first tries an SCTP
connect with ``agnhost connect`` (creating the socket makes the kernel load the
module if it can), then reads ``/proc/net/protocols``, where the kernel lists every
registered protocol by name, ``SCTP`` among them once the module is loaded (Linux
net/core/sock.c, proto_seq_show; net/sctp/socket.c names the protocol "SCTP").
"""

from __future__ import annotations

from dataclasses import dataclass

#: The programs the probe script runs (see harness/kube/probe.sh) besides the clients.
SCRIPT_TOOLS = ("mktemp", "od", "head", "tr", "grep")
#: The probe clients (harness/core/probe_clients.py); the SCTP client, agnhost, is
#: checked at ``$NPH_AGNHOST`` (default /agnhost).
CLIENTS = ("curl", "nc")

_MARK = "NPH-ENV"


def environment_script() -> str:
    tools = " ".join((*CLIENTS, *SCRIPT_TOOLS))
    return (
        f'for tool in {tools} "${{NPH_AGNHOST:-/agnhost}}"; do '
        f'command -v "$tool" >/dev/null 2>&1 || echo "{_MARK} missing $tool"; done\n'
        'dir=$(mktemp -d "${TMPDIR:-/tmp}/nph.XXXXXX" 2>/dev/null) && rm -rf "$dir" '
        f'|| echo "{_MARK} missing a writable ${{TMPDIR:-/tmp}}"\n'
        '"${NPH_AGNHOST:-/agnhost}" connect 127.0.0.1:9 --timeout=1000ms --protocol=sctp >/dev/null 2>&1\n'
        f'if grep -q "^SCTP " "${{NPH_PROTOCOLS:-/proc/net/protocols}}"; then echo "{_MARK} sctp yes"; '
        f'else echo "{_MARK} sctp no"; fi\n'
    )


def environment_command() -> list[str]:
    return ["sh", "-c", environment_script()]


@dataclass(frozen=True)
class ProbeEnvironment:
    sctp: bool
    missing: tuple[str, ...] = ()

    @property
    def sctp_reason(self) -> str:
        return (
            "the nodes' kernel has no SCTP (no SCTP in /proc/net/protocols of a probe pod); on the host, "
            "`modprobe sctp` (on Ubuntu it may need `apt-get install linux-modules-extra-$(uname -r)`) and run again"
        )

    def describe(self) -> str:
        sctp = "SCTP available" if self.sctp else "no SCTP in the nodes' kernel: SCTP cells are reported as unsupported"
        return f"probe pods: curl, nc and agnhost present; {sctp}"


def parse_environment(output: str) -> ProbeEnvironment:
    """The check's report. Without its SCTP line SCTP counts as absent."""
    missing: list[str] = []
    sctp = False
    for line in output.splitlines():
        words = line.split(" ", 2)
        if len(words) < 3 or words[0] != _MARK:
            continue
        if words[1] == "missing":
            missing.append(words[2].strip())
        elif words[1] == "sctp":
            sctp = words[2].strip() == "yes"
    return ProbeEnvironment(sctp, tuple(missing))
