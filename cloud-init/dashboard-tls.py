# dask-cloud dashboard terminator: the Dask dashboard over mutual TLS, never plain on a public port.
#
#   python /etc/dask/dashboard-tls.py --listen 0.0.0.0:8788 --target 127.0.0.1:8787 \
#       --ca /etc/dask/tls/ca.pem --cert /etc/dask/tls/scheduler.pem --key /etc/dask/tls/scheduler.key
#
# The scheduler's dashboard listens on 127.0.0.1 only; this process is the one door to it. It
# accepts a TLS connection only from a client whose certificate chains to the cluster's CA (the
# CA file is its only trust: no system store), then forwards raw bytes both ways, so HTTP and the
# dashboard's websockets both work. dask-cloud's `openDashboardTunnel()` / `dask-cloud dashboard`
# is the client: it listens on the user's 127.0.0.1 and carries each browser connection here.
#
# Flags (HOST:PORT takes [v6]:PORT too; port 0 picks a free port, printed in the first line):
#   --listen HOST:PORT          where to accept TLS (default 0.0.0.0:8788)
#   --target HOST:PORT          the dashboard to forward to (default 127.0.0.1:8787)
#   --ca FILE                   CA certificate(s), PEM: the only trust for client certificates (required)
#   --cert FILE                 this server's certificate, PEM (required)
#   --key FILE                  its private key, PEM (required; never printed)
#   --min-version 1.2|1.3       lowest TLS version (default 1.2)
#   --ciphers LIST              OpenSSL cipher list for TLS 1.2 (default: ECDHE with AES-GCM or
#                               ChaCha20-Poly1305 only, as dask-cloud's DEFAULT_TLS12_CIPHERS)
#   --handshake-timeout SECS    a client must finish the TLS handshake within this (default 10)
#   --connect-timeout SECS      time to reach the target (default 5)
#   --max-connections N         connections served at once, 1-10000; more are closed at once (default 256)
#
# Behaviour: one short stderr line per refused connection (no certificate, a certificate of
# another CA, plain HTTP, a handshake that does not finish in time, too many connections) and one
# when the target cannot be reached (the dashboard not up yet: the client's connection is closed
# with a TLS close_notify). Never any key material. Exit 0 on SIGTERM or SIGINT; exit 2 with a
# message when a file is missing or unusable or the address cannot be bound.
#
# Half-close: a client that ends its side (close_notify or FIN) has that passed on to the target as
# a TCP FIN, and the target's answer still flows back. When the target ends, what it sent is
# delivered, then the client gets a close_notify and the connection ends: Python's ssl module
# offers no TLS half-close on the server side that is safe while the peer still writes.
#
# Python 3.9 to 3.13, standard library only: it runs inside the Dask Docker image and on native
# images alike. One thread per connection, which moves bytes with non-blocking sockets and poll.
# A thread never serves a second connection, so OpenSSL's per-thread error queue, which Python
# 3.13 leaves stale after an unclean close (CPython gh-148594), cannot fail a healthy connection.
# Ship it like launch.py, full-line comments and blank lines stripped: no multi-line string here
# holds such a line, and the stripped copy is what test/unit/dashboard-terminator.test.ts checks.
import argparse
import errno
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time

PROG = "dashboard-tls"
CHUNK = 65536
# Per direction: above it, reading from that side pauses until the other side has taken the data.
BUFFER_LIMIT = 4 * CHUNK
DEFAULT_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
])


# Raised in the main thread by SIGTERM / SIGINT.
class Stop(Exception):
    pass


def log(message):
    try:
        sys.stderr.write("%s: %s\n" % (PROG, message))
        sys.stderr.flush()
    except Exception:
        pass


def fail(message):
    log(message)
    sys.exit(2)


def host_port(text):
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError("expected HOST:PORT (e.g. 127.0.0.1:8787 or [::]:8788), got %r" % text)
    return host, int(port)


def seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("expected a number of seconds in (0, 3600], got %r" % text)
    return value


def positive_int(text):
    if not text.isdigit() or not 0 < int(text) <= 10000:
        raise argparse.ArgumentTypeError("expected a whole number from 1 to 10000, got %r" % text)
    return int(text)


def show(address):
    host, port = address[0], address[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


# A short reason: OpenSSL's reason code (and verify message), or the OS error's text.
def why(exc):
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or type(exc).__name__
        detail = getattr(exc, "verify_message", None)
        return "%s (%s)" % (reason, detail) if detail else reason
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return type(exc).__name__


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description="Mutual-TLS terminator in front of the Dask dashboard.")
    p.add_argument("--listen", type=host_port, default=("0.0.0.0", 8788), metavar="HOST:PORT")
    p.add_argument("--target", type=host_port, default=("127.0.0.1", 8787), metavar="HOST:PORT")
    p.add_argument("--ca", required=True, metavar="FILE")
    p.add_argument("--cert", required=True, metavar="FILE")
    p.add_argument("--key", required=True, metavar="FILE")
    p.add_argument("--min-version", choices=["1.2", "1.3"], default="1.2")
    p.add_argument("--ciphers", default=DEFAULT_CIPHERS, metavar="LIST")
    p.add_argument("--handshake-timeout", type=seconds, default=10.0, metavar="SECS")
    p.add_argument("--connect-timeout", type=seconds, default=5.0, metavar="SECS")
    p.add_argument("--max-connections", type=positive_int, default=256, metavar="N")
    return p.parse_args(argv)


def make_context(args):
    for flag, path in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key)):
        if not os.path.isfile(path):
            fail("%s %s: no such file" % (flag, path))
        if not os.access(path, os.R_OK):
            fail("%s %s: not readable by this user" % (flag, path))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if args.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    # Renegotiation would let a connection change identity midway; compression leaks (CRIME).
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0) | ssl.OP_NO_COMPRESSION
    try:
        ctx.set_ciphers(args.ciphers)
    except ssl.SSLError:
        fail("--ciphers %r: OpenSSL accepts none of these ciphers" % args.ciphers)
    try:
        # The cluster's CA only: a certificate any public CA signed must not open the dashboard.
        ctx.load_verify_locations(cafile=args.ca)
    except (ssl.SSLError, OSError, ValueError) as exc:
        fail("--ca %s: not a PEM CA certificate (%s)" % (args.ca, why(exc)))
    try:
        ctx.load_cert_chain(args.cert, args.key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        fail("--cert %s / --key %s: cannot load them (%s): a PEM certificate and its own key, unencrypted" % (args.cert, args.key, why(exc)))
    return ctx


# No Nagle delay (websocket frames are small), and keepalive so a vanished peer frees its slot.
def tune(sock):
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    except OSError:
        pass


# The TLS server handshake, bounded by one deadline (a per-read timeout lets a trickle hold on).
def handshake(conn, ctx, deadline, peer):
    conn.setblocking(False)
    try:
        tls = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
    except (ssl.SSLError, OSError) as exc:
        log("refused %s: %s" % (peer, why(exc)))
        return None
    while True:
        try:
            tls.do_handshake()
            return tls
        except ssl.SSLWantReadError:
            waiting = ([tls], [])
        except ssl.SSLWantWriteError:
            waiting = ([], [tls])
        except ssl.SSLError as exc:
            log("refused %s: %s" % (peer, why(exc)))
            tls.close()
            return None
        except OSError as exc:
            log("refused %s: closed during the TLS handshake (%s)" % (peer, why(exc)))
            tls.close()
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            log("refused %s: no TLS handshake within the handshake timeout" % peer)
            tls.close()
            return None
        wait(waiting[0], waiting[1], left)


# Until one socket is ready (or `timeout` seconds pass). poll, not select: no FD_SETSIZE cap.
def wait(readers, writers, timeout):
    if not hasattr(select, "poll"):
        select.select(readers, writers, [], timeout)
        return
    flags = {}
    for sock in readers:
        flags[sock.fileno()] = flags.get(sock.fileno(), 0) | select.POLLIN
    for sock in writers:
        flags[sock.fileno()] = flags.get(sock.fileno(), 0) | select.POLLOUT
    poller = select.poll()
    for fd, mask in flags.items():
        poller.register(fd, mask)
    poller.poll(None if timeout is None else max(1, int(timeout * 1000)))


# Best effort: tell the client we are done, so it sees a clean TLS end rather than a cut.
def close_notify(tls):
    try:
        tls.unwrap()
    except (ssl.SSLError, OSError, ValueError):
        pass


# Move bytes both ways until both sides are done (see Half-close above). Raises OSError on resets.
def forward(tls, up):
    up.setblocking(False)
    to_up = bytearray()
    to_client = bytearray()
    # OpenSSL wants a write it could not finish retried with the same bytes: remember how many.
    tls_pending = 0
    client_open = True
    target_open = True
    up_write_closed = False
    while True:
        progress = False
        readers, writers = [], []
        if client_open and len(to_up) < BUFFER_LIMIT:
            try:
                data = tls.recv(CHUNK)
                if data:
                    to_up += data
                else:
                    client_open = False
                progress = True
            except ssl.SSLWantReadError:
                readers.append(tls)
            except ssl.SSLWantWriteError:
                writers.append(tls)
        if to_up:
            try:
                sent = up.send(to_up)
                del to_up[:sent]
                progress = progress or sent > 0
            except (BlockingIOError, InterruptedError):
                writers.append(up)
        elif not client_open and not up_write_closed:
            up_write_closed = True
            try:
                up.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if target_open and len(to_client) < BUFFER_LIMIT:
            try:
                data = up.recv(CHUNK)
                if data:
                    to_client += data
                else:
                    target_open = False
                progress = True
            except (BlockingIOError, InterruptedError):
                readers.append(up)
        if to_client:
            try:
                if tls_pending == 0:
                    tls_pending = min(len(to_client), CHUNK)
                sent = tls.send(to_client[:tls_pending])
                del to_client[:sent]
                tls_pending = 0
                progress = progress or sent > 0
            except ssl.SSLWantWriteError:
                writers.append(tls)
            except ssl.SSLWantReadError:
                readers.append(tls)
        elif not target_open:
            close_notify(tls)
            return
        if not client_open and not target_open and not to_up:
            return
        if not progress:
            wait(readers, writers, None)


def serve_one(conn, address, ctx, args, slots):
    peer = show(address)
    deadline = time.monotonic() + args.handshake_timeout
    tls = up = None
    try:
        tune(conn)
        tls = handshake(conn, ctx, deadline, peer)
        if tls is None:
            return
        try:
            up = socket.create_connection(args.target, timeout=args.connect_timeout)
        except OSError as exc:
            log("closed %s: the dashboard at %s is not reachable (%s)" % (peer, show(args.target), why(exc)))
            close_notify(tls)
            return
        tune(up)
        forward(tls, up)
    except OSError:
        # A reset or broken pipe on either side: routine for browsers, nothing to report.
        pass
    except Exception as exc:
        # A bug here must end this connection only, never the listener.
        log("connection from %s failed: %s" % (peer, type(exc).__name__))
    finally:
        for sock in (up, tls, conn):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        slots.release()


def listen(address):
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        try:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:
            pass
    try:
        server.bind((host, port))
        server.listen(128)
    except OSError as exc:
        server.close()
        fail("cannot listen on %s: %s" % (show(address), why(exc)))
    return server


def on_signal(signum, frame):
    raise Stop()


def main(argv):
    args = parse_args(argv)
    ctx = make_context(args)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Small stacks: a thread per connection only ever holds a few frames.
    threading.stack_size(512 * 1024)
    slots = threading.BoundedSemaphore(args.max_connections)
    server = None
    try:
        server = listen(args.listen)
        log("listening on %s (mutual TLS, CA %s), forwarding to %s" % (show(server.getsockname()), args.ca, show(args.target)))
        while True:
            try:
                conn, address = server.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log("accept failed: %s; retrying" % why(exc))
                    time.sleep(0.5)
                continue
            if not slots.acquire(False):
                log("refused %s: %d connections already open (--max-connections)" % (show(address), args.max_connections))
                conn.close()
                continue
            try:
                threading.Thread(target=serve_one, args=(conn, address, ctx, args, slots), daemon=True).start()
            except RuntimeError:
                log("refused %s: cannot start a thread" % show(address))
                conn.close()
                slots.release()
    except Stop:
        log("stopping")
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
