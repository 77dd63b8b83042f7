"""The subreaper shim (see shell/trees.py), run as a script, never imported:

    python -I -S subreaper.py <jackfield pid> <grace> argv...

It forks the server and stays its parent with PR_SET_CHILD_SUBREAPER, so every orphan below it
is re-parented to it and a walk of /proc from it finds the whole tree. Signals are taken
synchronously (blocked, then `sigwaitinfo`): SIGCHLD reaps; SIGTERM goes on to the whole tree,
which gets SIGKILL `grace` seconds later; SIGUSR1, or jackfield's death (PDEATHSIG), SIGKILLs
the tree now. When the server exits, what it left gets SIGTERM, then SIGKILL after LEFTOVER.
Once the tree is empty the shim exits with the server's status.
"""

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LEFTOVER = 0.5
"""After the server exits, how long what it left behind has between SIGTERM and SIGKILL: well
under jackfield's wait for an exit code (EOF_EXIT_WAIT), so a crash still reads as one."""
WAKE = {signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1}


def tree(root: int) -> list[int]:
    """Every live descendant of `root`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            out.append(pid)
            todo.append(pid)
    return out


def send(sig: int, pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def serve(parent: int, grace: float, argv: list[str]) -> int:
    """Run the server to the end of its tree; its wait status."""
    libc = ctypes.CDLL(None)
    me = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, WAKE)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    server = os.fork()
    if server == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WAKE)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != me:
            os._exit(1)
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"cannot run {argv[0]}: {e.strerror}\n".encode())
        os._exit(127)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the server holds the pipes; our copies would hide its EOF
        os.dup2(null, fd)

    status: int | None = None
    deadline = 0.0 if os.getppid() != parent else None  # None while serving: SIGKILL at
    while True:
        status = reap(server, status)
        info: signal.struct_siginfo | None
        if status is None and deadline is None:  # serving: nothing to do until a signal
            info = signal.sigwaitinfo(WAKE)
        else:
            pids = tree(me)
            if status is not None and not pids:
                return status
            now = time.monotonic()
            if deadline is None:  # the server exited: what it left gets SIGTERM, then SIGKILL
                terminate(pids)
                deadline = now + LEFTOVER
            if now >= deadline:
                send(signal.SIGKILL, pids)
                signal.sigtimedwait(WAKE, 0.01)
                continue
            info = signal.sigtimedwait(WAKE, deadline - now)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        now = time.monotonic()
        if info.si_signo == signal.SIGUSR1 or os.getppid() != parent:
            deadline = 0.0
        else:  # SIGTERM: jackfield stops the server
            terminate(tree(me))
            deadline = min(deadline, now + grace) if deadline is not None else now + grace


def reap(server: int, status: int | None) -> int | None:
    """Reap every exited child (adopted orphans too); the server's wait status once it exited."""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == server:
            status = wait_status


def terminate(pids: list[int]) -> None:
    """SIGTERM, then SIGCONT: a stopped process acts on SIGTERM only once continued."""
    send(signal.SIGTERM, pids)
    send(signal.SIGCONT, pids)


def main() -> None:
    status = serve(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # die of the same signal, so jackfield reads the same exit
        if -code != signal.SIGKILL:  # SIGKILL has no handler to reset, and is never blocked
            signal.signal(-code, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


if __name__ == "__main__":
    main()
