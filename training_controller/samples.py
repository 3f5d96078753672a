"""Realistic sample logs for the demo and the tests, shaped like documents of an Opni `logs` index.

The controller trains NuLog on whatever the log source returns, and a demo or a test needs that source to hold
something that looks like a real cluster: several workloads with their own formats (an nginx ingress, a
PostgreSQL server, the Kubernetes API server, a Java service that now and then dumps a stack trace), many
distinct lines built from far fewer templates, and timestamps inside the messages that agree with the
document's own. Everything here is deterministic given a seed (one `random.Random` per call, no module
state) and streams: documents are generated one at a time and files are written line by line, so a day of
logs never sits in memory.

Each document holds exactly the fields of an Opni `logs` index:

    {"timestamp": <int ns since epoch>, "log": "<raw line>", "cluster_id": ..., "namespace_name": ...,
     "deployment": ..., "pod_name": ..., "is_control_plane_log": <bool>}
"""

from __future__ import annotations

import gzip
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

_NS_PER_S = 1_000_000_000
_NS_PER_US = 1_000
_NS_PER_MINUTE = 60 * _NS_PER_S
_NS_PER_HOUR = 3600 * _NS_PER_S
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Spelled out rather than strftime("%b") so that the output does not depend on the process locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Alphabet of Kubernetes generated name suffixes (no vowels, no confusable digits).
_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_T = TypeVar("_T")

FIELDS = (
    "timestamp",
    "log",
    "cluster_id",
    "namespace_name",
    "deployment",
    "pod_name",
    "is_control_plane_log",
)

# ---------------------------------------------------------------------------------------------------------
# Shared helpers


def _utc(ts_ns: int) -> datetime:
    seconds, rem = divmod(ts_ns, _NS_PER_S)
    return _EPOCH + timedelta(seconds=seconds, microseconds=rem // _NS_PER_US)


def _k8s_suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_K8S_ALPHABET) for _ in range(n))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _private_ip(rng: random.Random, *, prefix: str = "10") -> str:
    return f"{prefix}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _client_ip(rng: random.Random) -> str:
    # Documentation ranges (RFC 5737) stand in for public clients.
    kind = rng.random()
    if kind < 0.4:
        return _private_ip(rng)
    net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{net}.{rng.randint(1, 254)}"


def _weighted(rng: random.Random, pairs: tuple[tuple[_T, float], ...]) -> _T:
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]


# ---------------------------------------------------------------------------------------------------------
# Workloads. Each emitter takes the run's state, a pod and a timestamp, and returns (timestamp, line) pairs:
# one pair for an ordinary line, several (timestamps a few microseconds apart) for a stack trace.


@dataclass
class _Pod:
    name: str
    pids: tuple[int, ...]
    counter: int = 0


@dataclass
class _Workload:
    namespace: str
    deployment: str
    control_plane: bool
    weight: float
    pods: list[_Pod]
    emit: Callable[[random.Random, _Pod, int], list[tuple[int, str]]]


# --- 1. nginx ingress ------------------------------------------------------------------------------------

_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.0.3 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{ff}.0) Gecko/20100101 Firefox/{ff}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 14_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 11; Pixel 5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} Mobile Safari/537.36",
    "curl/7.{curl}.0",
    "Go-http-client/1.1",
    "python-requests/2.{requests}.0",
)

_SEARCH_WORDS = ("shoes", "jacket", "red+dress", "laptop", "usb-c+cable", "coffee", "headphones", "tent")


def _user_agent(rng: random.Random) -> str:
    template = rng.choice(_USER_AGENTS)
    return template.format(
        chrome=f"{rng.randint(87, 90)}.0.{rng.randint(4280, 4430)}.{rng.randint(40, 150)}",
        ff=rng.randint(84, 87),
        curl=rng.randint(58, 75),
        requests=rng.randint(22, 25),
    )


def _web_request(rng: random.Random) -> tuple[str, str, int, int]:
    """Return (method, path, status, body bytes) for one request."""
    n = rng.random()
    if n < 0.22:
        method, path = "GET", f"/api/v1/orders/{rng.randint(1000, 99999)}"
        status = _weighted(rng, ((200, 90), (404, 6), (500, 2), (502, 2)))
        size = rng.randint(300, 2400)
    elif n < 0.36:
        method = "GET"
        path = f"/api/v1/products?page={rng.randint(1, 40)}&size={rng.choice((20, 50, 100))}"
        status = _weighted(rng, ((200, 96), (503, 2), (499, 2)))
        size = rng.randint(4000, 60000)
    elif n < 0.44:
        method, path = "POST", "/api/v1/orders"
        status = _weighted(rng, ((201, 88), (400, 7), (422, 3), (500, 2)))
        size = rng.randint(200, 900)
    elif n < 0.52:
        method, path = "GET", f"/api/v1/users/{_uuid(rng)}/cart"
        status = _weighted(rng, ((200, 92), (401, 6), (404, 2)))
        size = rng.randint(100, 3000)
    elif n < 0.58:
        method = rng.choice(("PUT", "DELETE"))
        path = f"/api/v1/cart/{rng.randint(10000, 999999)}/items/{rng.randint(1, 99999)}"
        status = 200 if method == "PUT" else 204
        size = rng.randint(80, 600) if method == "PUT" else 0
    elif n < 0.72:
        kind = rng.choice(("js/app.{h}.js", "js/vendor.{h}.js", "css/main.{h}.css"))
        method, path = "GET", "/static/" + kind.format(h=_hex(rng, 8))
        status = _weighted(rng, ((200, 55), (304, 45)))
        size = rng.randint(20000, 900000) if status == 200 else 0
    elif n < 0.80:
        method = "GET"
        w = rng.choice((160, 320, 640, 1280))
        path = f"/images/products/{rng.randint(1, 50000)}_{w}x{w * 3 // 4}.jpg"
        status = _weighted(rng, ((200, 80), (304, 15), (404, 5)))
        size = rng.randint(5000, 400000) if status == 200 else 0
    elif n < 0.86:
        method, path = "GET", f"/search?q={rng.choice(_SEARCH_WORDS)}&page={rng.randint(1, 5)}"
        status = 200
        size = rng.randint(2000, 40000)
    elif n < 0.91:
        method, path = "POST", "/api/v1/payments"
        status = _weighted(rng, ((200, 85), (402, 8), (502, 4), (504, 3)))
        size = rng.randint(120, 400)
    elif n < 0.97:
        method, path = "GET", rng.choice(("/healthz", "/readyz"))
        status, size = 200, 2
    else:
        method, path = "GET", rng.choice(("/favicon.ico", "/robots.txt", "/"))
        status = _weighted(rng, ((200, 70), (301, 20), (404, 10)))
        size = rng.randint(0, 5000)
    return method, path, int(status), size


def _nginx_access(rng: random.Random, pod: _Pod, ts_ns: int) -> str:
    dt = _utc(ts_ns)
    stamp = f"{dt.day:02d}/{_MONTHS[dt.month - 1]}/{dt.year:04d}:{dt:%H:%M:%S} +0000"
    method, path, status, size = _web_request(rng)
    if path in ("/healthz", "/readyz"):
        agent, referer, client = "kube-probe/1.20", "-", _private_ip(rng)
    else:
        agent = _user_agent(rng)
        referer = rng.choice(("-", "-", "https://shop.example.com/", "https://shop.example.com/cart",
                              f"https://shop.example.com/products/{rng.randint(1, 50000)}",
                              "https://www.google.com/"))
        client = _client_ip(rng)
    request_time = rng.lognormvariate(-4.0, 1.1) if status < 500 else rng.uniform(0.5, 60.0)
    return (f'{client} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "{referer}" "{agent}" '
            f"{request_time:.3f}")


def _nginx_error(rng: random.Random, pod: _Pod, ts_ns: int) -> str:
    dt = _utc(ts_ns)
    pod.counter += rng.randint(1, 40)
    worker = rng.choice(pod.pids)
    method, path, _, _ = _web_request(rng)
    client = _client_ip(rng)
    upstream = f"http://10.1.{rng.randint(0, 15)}.{rng.randint(2, 250)}:8080{path}"
    tail = (f'client: {client}, server: shop.example.com, request: "{method} {path} HTTP/1.1", '
            f'upstream: "{upstream}", host: "shop.example.com"')
    level, message = _weighted(rng, (
        (("warn", f"upstream server temporarily disabled while reading response header from upstream, {tail}"), 30),
        (("error", f"upstream timed out (110: Connection timed out) while reading response header from upstream, {tail}"), 25),
        (("error", f"connect() failed (111: Connection refused) while connecting to upstream, {tail}"), 15),
        (("warn", f"a client request body is buffered to a temporary file /var/cache/nginx/client_temp/"
                  f"{rng.randint(1, 9999999999):010d}, client: {client}, server: shop.example.com, "
                  f'request: "POST /api/v1/orders HTTP/1.1", host: "shop.example.com"'), 15),
        (("info", f"client {client} closed keepalive connection"), 10),
        (("error", f'open() "/usr/share/nginx/html{path.split("?")[0]}" failed (2: No such file or directory), '
                   f'client: {client}, server: shop.example.com, request: "{method} {path} HTTP/1.1", '
                   f'host: "shop.example.com"'), 5),
    ))
    return f"{dt:%Y/%m/%d %H:%M:%S} [{level}] {worker}#{worker}: *{pod.counter} {message}"


def _emit_web(rng: random.Random, pod: _Pod, ts_ns: int) -> list[tuple[int, str]]:
    if rng.random() < 0.9:
        return [(ts_ns, _nginx_access(rng, pod, ts_ns))]
    return [(ts_ns, _nginx_error(rng, pod, ts_ns))]


# --- 2. PostgreSQL ---------------------------------------------------------------------------------------

_PG_USERS = (("app", "orders"), ("app", "inventory"), ("reporting", "orders"), ("payment", "payments"))
_PG_TABLES = ("orders.public.items", "orders.public.orders", "inventory.public.stock",
              "payments.public.transactions", "orders.public.customers")
_PG_STATEMENTS = (
    "SELECT id, status, total FROM orders WHERE id = {n}",
    "SELECT * FROM items WHERE order_id = {n} ORDER BY position",
    "UPDATE stock SET quantity = quantity - {k} WHERE sku = 'SKU-{n}'",
    "INSERT INTO transactions (id, order_id, amount) VALUES ('{uuid}', {n}, {amount})",
    "SELECT count(*) FROM orders WHERE created_at > now() - interval '{k} minutes'",
    "DELETE FROM sessions WHERE expires_at < now() - interval '{k} days'",
)


def _emit_db(rng: random.Random, pod: _Pod, ts_ns: int) -> list[tuple[int, str]]:
    dt = _utc(ts_ns)
    prefix = f"{dt:%Y-%m-%d %H:%M:%S}.{dt.microsecond // 1000:03d} UTC"
    checkpointer, autovacuum = pod.pids
    backend = rng.randint(1000, 65000)
    user, database = rng.choice(_PG_USERS)
    host, port = _private_ip(rng), rng.randint(32768, 60999)
    kind = rng.random()
    if kind < 0.35:
        statement = rng.choice(_PG_STATEMENTS).format(
            n=rng.randint(1, 999999), k=rng.randint(1, 60), uuid=_uuid(rng),
            amount=f"{rng.uniform(1, 900):.2f}")
        duration = rng.lognormvariate(1.0, 1.3)
        pid, level, message = backend, "LOG", f"duration: {duration:.3f} ms  statement: {statement}"
    elif kind < 0.50:
        pid, level, message = backend, "LOG", f"connection received: host={host} port={port}"
    elif kind < 0.65:
        pid, level, message = backend, "LOG", f"connection authorized: user={user} database={database}"
    elif kind < 0.76:
        session = rng.uniform(0.01, 3000)
        minutes, seconds = divmod(session, 60)
        hours, minutes = divmod(int(minutes), 60)
        pid, level = backend, "LOG"
        message = (f"disconnection: session time: {hours}:{minutes:02d}:{seconds:06.3f} user={user} "
                   f"database={database} host={host} port={port}")
    elif kind < 0.80:
        pid, level, message = checkpointer, "LOG", "checkpoint starting: time"
    elif kind < 0.84:
        buffers = rng.randint(5, 4000)
        write, sync = rng.uniform(0.1, 270), rng.uniform(0.001, 0.2)
        files = rng.randint(2, 80)
        distance = rng.randint(100, 90000)
        pid, level = checkpointer, "LOG"
        message = (f"checkpoint complete: wrote {buffers} buffers ({buffers / 16384 * 100:.1f}%); "
                   f"0 WAL file(s) added, {rng.randint(0, 3)} removed, {rng.randint(0, 4)} recycled; "
                   f"write={write:.3f} s, sync={sync:.3f} s, total={write + sync + 0.004:.3f} s; "
                   f"sync files={files}, longest={sync / 2:.3f} s, average={sync / files:.3f} s; "
                   f"distance={distance} kB, estimate={distance + rng.randint(0, 5000)} kB")
    elif kind < 0.90:
        table = rng.choice(_PG_TABLES)
        pages = rng.randint(10, 50000)
        pid, level = autovacuum, "LOG"
        message = (f'automatic vacuum of table "{table}": index scans: {rng.randint(0, 2)}, '
                   f"pages: {rng.randint(0, 50)} removed, {pages} remain, 0 skipped due to pins, "
                   f"{rng.randint(0, pages)} skipped frozen")
    elif kind < 0.94:
        table = rng.choice(_PG_TABLES)
        pid, level = autovacuum, "LOG"
        message = (f'automatic analyze of table "{table}" system usage: CPU: user: {rng.uniform(0, 0.5):.2f} s, '
                   f"system: {rng.uniform(0, 0.1):.2f} s, elapsed: {rng.uniform(0.01, 2):.2f} s")
    elif kind < 0.97:
        pid, level = backend, "ERROR"
        message = _weighted(rng, (
            ('duplicate key value violates unique constraint "orders_pkey"', 3),
            ("canceling statement due to statement timeout", 2),
            ("deadlock detected", 1),
            (f'relation "order_archive_{rng.randint(2015, 2020)}" does not exist at character '
             f"{rng.randint(15, 40)}", 1),
        ))
    elif kind < 0.99:
        pid, level, message = backend, "LOG", "could not receive data from client: Connection reset by peer"
    else:
        pid, level = backend, "FATAL"
        message = f'password authentication failed for user "{user}"'
    return [(ts_ns, f"{prefix} [{pid}] {level}:  {message}")]


# --- 3. kube-apiserver -----------------------------------------------------------------------------------

_K8S_RESOURCES = ("pods", "services", "endpoints", "configmaps", "secrets", "events", "deployments",
                  "replicasets", "leases")
_K8S_NAMESPACES = ("web", "data", "shop", "kube-system", "default", "monitoring")
_K8S_OBJECTS = {
    "web": ("nginx-ingress", "nginx-ingress-controller", "shop-frontend"),
    "data": ("postgres", "postgres-credentials", "pgbouncer"),
    "shop": ("payment-service", "payment-config", "cart-service"),
    "kube-system": ("coredns", "kube-proxy", "kube-controller-manager", "extension-apiserver-authentication"),
    "default": ("kubernetes", "default-token"),
    "monitoring": ("prometheus", "grafana", "alertmanager-main"),
}
_K8S_AGENTS = ("kubectl/v1.20.4 (linux/amd64) kubernetes/e87da0b", "kubelet/v1.20.4 (linux/amd64) kubernetes/e87da0b",
               "kube-controller-manager/v1.20.4 (linux/amd64) kubernetes/e87da0b/leader-election",
               "kube-scheduler/v1.20.4 (linux/amd64) kubernetes/e87da0b",
               "Go-http-client/2.0", "coredns/v0.0.0 (linux/amd64) kubernetes/$Format")
_K8S_WATCH_TYPES = ("*v1.Pod", "*v1.Secret", "*v1.ConfigMap", "*v1.Endpoints", "*v1.Node",
                    "*v1.PartialObjectMetadata", "*v1beta1.Ingress")
_K8S_EVALUATORS = ("leases.coordination.k8s.io", "endpoints", "serviceaccounts", "deployments.apps",
                   "replicasets.apps", "events.events.k8s.io", "jobs.batch", "horizontalpodautoscalers.autoscaling")


def _klog(dt: datetime, level: str, tid: int, where: str, message: str) -> str:
    return f"{level}{dt:%m%d %H:%M:%S}.{dt.microsecond:06d} {tid:7d} {where}] {message}"


def _emit_control_plane(rng: random.Random, pod: _Pod, ts_ns: int) -> list[tuple[int, str]]:
    dt = _utc(ts_ns)
    tid = rng.choice(pod.pids)
    kind = rng.random()
    if kind < 0.55:
        ns = rng.choice(_K8S_NAMESPACES)
        resource = rng.choice(_K8S_RESOURCES)
        verb = _weighted(rng, (("GET", 5), ("LIST", 3), ("WATCH", 2), ("PUT", 2), ("PATCH", 1), ("POST", 1)))
        if verb == "LIST":
            uri = f"/api/v1/namespaces/{ns}/{resource}?limit={rng.choice((500, 100))}"
            verb = "GET"
        elif verb == "WATCH":
            uri = (f"/api/v1/namespaces/{ns}/{resource}?allowWatchBookmarks=true&resourceVersion="
                   f"{rng.randint(100000, 9999999)}&timeout={rng.randint(5, 9)}m{rng.randint(0, 59)}s"
                   f"&timeoutSeconds={rng.randint(300, 599)}&watch=true")
            verb = "GET"
        elif resource == "leases":
            uri = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-{rng.randint(1, 6)}"
        else:
            uri = f"/api/v1/namespaces/{ns}/{resource}/{rng.choice(_K8S_OBJECTS[ns])}"
        status = _weighted(rng, ((200, 90), (201, 3), (404, 4), (409, 2), (500, 1)))
        latency = rng.lognormvariate(1.0, 1.0)
        latency_s = f"{latency:.1f}ms" if latency < 1000 else f"{latency / 1000:.3f}s"
        message = (f'"HTTP" verb="{verb}" URI="{uri}" latency="{latency_s}" userAgent="{rng.choice(_K8S_AGENTS)}" '
                   f'srcIP="{_private_ip(rng)}:{rng.randint(30000, 60999)}" resp={status}')
        return [(ts_ns, _klog(dt, "I", tid, "httplog.go:89", message))]
    if kind < 0.68:
        message = (f"watch of {rng.choice(_K8S_WATCH_TYPES)} ended with: very short watch: "
                   f"k8s.io/client-go/informers/factory.go:134: Unexpected watch close - watch lasted less "
                   f"than a second and no items received")
        return [(ts_ns, _klog(dt, "W", tid, "reflector.go:436", message))]
    if kind < 0.78:
        message = f"quota admission added evaluator for: {rng.choice(_K8S_EVALUATORS)}"
        return [(ts_ns, _klog(dt, "I", tid, "controller.go:606", message))]
    if kind < 0.84:
        return [(ts_ns, _klog(dt, "I", tid, "client.go:360", 'parsed scheme: "passthrough"'))]
    if kind < 0.89:
        message = "ccResolverWrapper: sending update to cc: {[{https://127.0.0.1:2379  <nil> 0 <nil>}] <nil> <nil>}"
        return [(ts_ns, _klog(dt, "I", tid, "passthrough.go:48", message))]
    if kind < 0.95:
        ns, resource = rng.choice(_K8S_NAMESPACES), rng.choice(_K8S_RESOURCES)
        total = rng.randint(500, 3000)
        start = _utc(ts_ns - total * 1_000_000)
        message = (f'Trace[{rng.randint(100000000, 2147483647)}]: "List etcd3" key:/{resource}/{ns},'
                   f"resourceVersion:,resourceVersionMatch:,limit:500,continue: "
                   f"({start.day:02d}-{_MONTHS[start.month - 1]}-{start.year} {start:%H:%M:%S}."
                   f"{start.microsecond // 1000:03d}) (total time: {total}ms):")
        return [(ts_ns, _klog(dt, "I", tid, "trace.go:205", message))]
    if kind < 0.98:
        message = (f"Failed calling webhook, failing open validate.nginx.ingress.kubernetes.io: failed calling "
                   f'webhook "validate.nginx.ingress.kubernetes.io": Post "https://ingress-nginx-controller-'
                   f'admission.web.svc:443/networking/v1beta1/ingresses?timeout={rng.randint(5, 30)}s": '
                   f"context deadline exceeded")
        return [(ts_ns, _klog(dt, "W", tid, "dispatcher.go:142", message))]
    message = "apiserver received an error that is not an metav1.Status: context.deadlineExceededError{}"
    return [(ts_ns, _klog(dt, "E", tid, "status.go:71", message))]


# --- 4. payment-service (Spring Boot) --------------------------------------------------------------------

_SPRING_TAIL = (
    "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1006)",
    "org.springframework.web.servlet.FrameworkServlet.doPost(FrameworkServlet.java:909)",
    "javax.servlet.http.HttpServlet.service(HttpServlet.java:652)",
    "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:883)",
    "org.apache.catalina.core.ApplicationFilterChain.internalDoFilter(ApplicationFilterChain.java:227)",
    "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1707)",
    "org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:61)",
    "java.base/java.lang.Thread.run(Thread.java:829)",
)

_GATEWAY_FRAMES = (
    "com.example.payment.gateway.GatewayClient.charge(GatewayClient.java:88)",
    "com.example.payment.PaymentService.process(PaymentService.java:142)",
    "com.example.payment.PaymentController.pay(PaymentController.java:57)",
    "java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)",
    "java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke(NativeMethodAccessorImpl.java:62)",
    "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:197)",
    "org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1061)",
)


def _exception(rng: random.Random) -> tuple[str, list[str]]:
    """Return (summary, trace lines) for one exception."""
    payment, order = _uuid(rng), rng.randint(1000, 99999)
    kind = rng.randrange(4)
    if kind == 0:
        head = (f"java.lang.IllegalStateException: Gateway returned unexpected status {rng.choice((502, 503, 504))} "
                f"for payment {payment}")
        lines = [head, *(f"\tat {f}" for f in _GATEWAY_FRAMES), *(f"\tat {f}" for f in _SPRING_TAIL)]
    elif kind == 1:
        head = ("org.springframework.dao.DataAccessResourceFailureException: Unable to acquire JDBC Connection; "
                "nested exception is org.hibernate.exception.JDBCConnectionException: Unable to acquire JDBC "
                "Connection")
        lines = [
            head,
            "\tat org.springframework.orm.jpa.vendor.HibernateJpaDialect.convertHibernateAccessException(HibernateJpaDialect.java:275)",
            "\tat com.example.payment.repository.TransactionRepository.save(TransactionRepository.java:34)",
            "\tat com.example.payment.PaymentService.process(PaymentService.java:131)",
            "\tat com.example.payment.PaymentController.pay(PaymentController.java:57)",
            *(f"\tat {f}" for f in _SPRING_TAIL[:4]),
            (f"Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, "
             f"request timed out after {rng.choice((30000, 30001, 30004))}ms."),
            "\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:695)",
            "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:197)",
            "\tat com.zaxxer.hikari.HikariDataSource.getConnection(HikariDataSource.java:128)",
            f"\t... {rng.randint(40, 70)} common frames omitted",
        ]
    elif kind == 2:
        head = f"java.net.SocketTimeoutException: Read timed out after {rng.choice((5000, 10000))} ms"
        lines = [
            head,
            "\tat java.base/java.net.SocketInputStream.socketRead0(Native Method)",
            "\tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:168)",
            "\tat org.apache.http.impl.io.SessionInputBufferImpl.fillBuffer(SessionInputBufferImpl.java:153)",
            *(f"\tat {f}" for f in _GATEWAY_FRAMES[:3]),
            *(f"\tat {f}" for f in _SPRING_TAIL[-3:]),
        ]
    else:
        head = ('java.lang.NullPointerException: Cannot invoke "com.example.payment.model.Card.getToken()" '
                'because "card" is null')
        lines = [
            head,
            "\tat com.example.payment.PaymentService.tokenize(PaymentService.java:211)",
            "\tat com.example.payment.PaymentService.process(PaymentService.java:118)",
            "\tat com.example.payment.PaymentController.pay(PaymentController.java:57)",
            *(f"\tat {f}" for f in _SPRING_TAIL),
        ]
    summary = f"Payment {payment} failed for order {order}"
    return summary, lines


def _spring(dt: datetime, level: str, thread: str, logger: str, message: str) -> str:
    return (f"{dt:%Y-%m-%d %H:%M:%S}.{dt.microsecond // 1000:03d} {level:>5} 1 --- [{thread[-15:]:>15}] "
            f"{logger:<40} : {message}")


def _emit_app(rng: random.Random, pod: _Pod, ts_ns: int) -> list[tuple[int, str]]:
    dt = _utc(ts_ns)
    thread = f"http-nio-8080-exec-{rng.randint(1, 10)}"
    controller = "c.e.payment.PaymentController"
    if rng.random() < 1 / 200:
        summary, trace = _exception(rng)
        if rng.random() < 0.5:
            head = _spring(dt, "ERROR", thread, controller, summary)
        else:
            head = _spring(dt, "ERROR", thread, "o.a.c.c.C.[.[.[/].[dispatcherServlet]",
                           "Servlet.service() for servlet [dispatcherServlet] in context with path [] threw "
                           f"exception [Request processing failed; nested exception is {trace[0]}] with root cause")
        out = [(ts_ns, head)]
        t = ts_ns
        for line in trace:
            t += rng.randint(1, 40) * _NS_PER_US
            out.append((t, line))
        return out
    payment, order = _uuid(rng), rng.randint(1000, 99999)
    amount = f"{rng.uniform(1, 900):.2f}"
    currency = rng.choice(("EUR", "USD", "GBP"))
    kind = rng.random()
    if kind < 0.40:
        line = _spring(dt, "INFO", thread, controller,
                       f"Processed payment {payment} for order {order} in {rng.randint(8, 900)} ms")
    elif kind < 0.65:
        line = _spring(dt, "INFO", thread, "c.e.payment.PaymentService",
                       f"Received charge request for order {order}: amount={amount} {currency}, "
                       f"method={rng.choice(('card', 'paypal', 'sepa'))}")
    elif kind < 0.77:
        line = _spring(dt, "INFO", "scheduling-1", "c.e.payment.settlement.SettlementJob",
                       f"Settled batch {_hex(rng, 12)}: {rng.randint(1, 400)} transactions, "
                       f"total {rng.uniform(100, 90000):.2f} {currency}")
    elif kind < 0.87:
        line = _spring(dt, "WARN", thread, "c.e.payment.gateway.GatewayClient",
                       f"Retrying gateway call for payment {payment} (attempt {rng.randint(2, 3)}/3) after "
                       f"{rng.choice((250, 500, 1000))} ms: Read timed out")
    elif kind < 0.92:
        line = _spring(dt, "WARN", "HikariPool-1 housekeeper", "com.zaxxer.hikari.pool.HikariPool",
                       f"HikariPool-1 - Thread starvation or clock leap detected "
                       f"(housekeeper delta={rng.randint(1, 5)}m{rng.randint(0, 59)}s{rng.randint(0, 999)}ms).")
    elif kind < 0.97:
        line = _spring(dt, "ERROR", thread, "c.e.payment.PaymentService",
                       f"Payment {payment} declined by gateway: code="
                       f"{rng.choice(('card_declined', 'insufficient_funds', 'expired_card', 'do_not_honor'))}")
    else:
        line = _spring(dt, "INFO", thread, "o.s.web.servlet.DispatcherServlet",
                       f"Completed initialization in {rng.randint(1, 20)} ms")
    return [(ts_ns, line)]


# ---------------------------------------------------------------------------------------------------------
# Public API


def _workloads(rng: random.Random) -> list[_Workload]:
    def replicaset_pods(deployment: str, n: int, pids: Callable[[], tuple[int, ...]]) -> list[_Pod]:
        template_hash = _k8s_suffix(rng, 9)
        return [_Pod(f"{deployment}-{template_hash}-{_k8s_suffix(rng, 5)}", pids()) for _ in range(n)]

    def nginx_pids() -> tuple[int, ...]:
        return tuple(sorted(rng.sample(range(20, 60), 4)))

    return [
        _Workload("web", "nginx-ingress", False, 0.45,
                  replicaset_pods("nginx-ingress", 3, nginx_pids), _emit_web),
        _Workload("data", "postgres", False, 0.20,
                  [_Pod(f"postgres-{i}", (rng.randint(25, 90), rng.randint(90, 400))) for i in range(2)],
                  _emit_db),
        _Workload("kube-system", "kube-apiserver", True, 0.20,
                  [_Pod(f"kube-apiserver-master-{i}", (1,) * 6 + tuple(rng.sample(range(10, 400), 3)))
                   for i in range(1, 4)],
                  _emit_control_plane),
        _Workload("shop", "payment-service", False, 0.15,
                  replicaset_pods("payment-service", 2, lambda: (1,)), _emit_app),
    ]


def generate_documents(
    *,
    start_ns: int,
    end_ns: int,
    rate_per_s: float = 2.0,
    seed: int = 0,
    cluster_id: str = "demo-cluster",
) -> Iterator[dict]:
    """Yield documents with timestamps in [start_ns, end_ns), increasing, roughly rate_per_s per second overall (jittered)."""
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    rng = random.Random(seed)
    workloads = _workloads(rng)
    weights = [w.weight for w in workloads]
    mean_gap_ns = _NS_PER_S / rate_per_s
    t = start_ns
    while True:
        # Exponential gaps (a Poisson process) give bursts and lulls around the mean rate.
        t += max(1, int(rng.expovariate(1.0) * mean_gap_ns))
        if t >= end_ns:
            return
        workload = rng.choices(workloads, weights=weights)[0]
        pod = rng.choice(workload.pods)
        for ts, line in workload.emit(rng, pod, t):
            if ts >= end_ns:
                return
            t = ts
            yield {
                "timestamp": ts,
                "log": line,
                "cluster_id": cluster_id,
                "namespace_name": workload.namespace,
                "deployment": workload.deployment,
                "pod_name": pod.name,
                "is_control_plane_log": workload.control_plane,
            }


def write_sample_logs(
    out_dir: Path,
    *,
    hours: float,
    end_ns: int | None = None,
    rate_per_s: float = 2.0,
    seed: int = 0,
    cluster_id: str = "demo-cluster",
    file_hours: float = 1.0,
) -> list[Path]:
    """Write JSONL files (one document per line) covering `hours` ending at end_ns (default: now, floored to the minute); one file per `file_hours` slice named logs-<UTC yyyymmddThhmm>.jsonl; returns the paths in time order."""
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    slice_ns = round(file_hours * _NS_PER_HOUR)
    if slice_ns < _NS_PER_MINUTE:
        raise ValueError(f"file_hours must be at least one minute, got {file_hours}")
    if end_ns is None:
        end_ns = time.time_ns() // _NS_PER_MINUTE * _NS_PER_MINUTE
    start_ns = end_ns - round(hours * _NS_PER_HOUR)
    n_files = math.ceil((end_ns - start_ns) / slice_ns)
    starts = [start_ns + i * slice_ns for i in range(n_files)]
    paths = [Path(out_dir) / f"logs-{_utc(s):%Y%m%dT%H%M}.jsonl" for s in starts]
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    documents = generate_documents(start_ns=start_ns, end_ns=end_ns, rate_per_s=rate_per_s, seed=seed,
                                   cluster_id=cluster_id)
    index = 0
    out = paths[0].open("w", encoding="utf-8")
    try:
        for doc in documents:
            while index + 1 < n_files and doc["timestamp"] >= starts[index + 1]:
                out.close()
                index += 1
                out = paths[index].open("w", encoding="utf-8")
            out.write(json.dumps(doc, separators=(",", ":")) + "\n")
        # Every slice gets its file, even one the (random) arrivals left empty.
        while index + 1 < n_files:
            out.close()
            index += 1
            out = paths[index].open("w", encoding="utf-8")
    finally:
        out.close()
    return paths


def iter_documents(paths: Iterable[Path]) -> Iterator[dict]:
    """Yield the documents of JSONL files (`.jsonl` or `.jsonl.gz`) in file order."""
    for path in paths:
        path = Path(path)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
