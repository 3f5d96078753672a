"""An nginx ingress: access lines of a shop and its API, and some errors."""

from __future__ import annotations

import random
from collections.abc import Callable

from training_controller.demo.samples.common import (
    MONTHS,
    Pod,
    client_ip,
    private_ip,
    random_hex,
    random_uuid,
    utc,
    weighted,
)

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


Request = tuple[str, str, int, int]  # method, path, status, body bytes


def _request(
    method: str, path: Callable[[random.Random], str], status: int | tuple[tuple[int, float], ...],
    size: int | tuple[int, int], *, empty_unless_ok: bool = False,
) -> Callable[[random.Random], Request]:
    """One kind of request: its path drawn, then its status (one, or weighted), then its body size (one, or
    uniform in a range; 0 for a status other than 200 when `empty_unless_ok`, as for 304s)."""

    def draw(rng: random.Random) -> Request:
        drawn_path = path(rng)
        drawn_status = status if isinstance(status, int) else weighted(rng, status)
        if isinstance(size, int) or (empty_unless_ok and drawn_status != 200):
            drawn_size = size if isinstance(size, int) else 0
        else:
            drawn_size = rng.randint(*size)
        return method, drawn_path, int(drawn_status), drawn_size

    return draw


def _cart_item(rng: random.Random) -> Request:
    method = rng.choice(("PUT", "DELETE"))
    path = f"/api/v1/cart/{rng.randint(10000, 999999)}/items/{rng.randint(1, 99999)}"
    return method, path, 200 if method == "PUT" else 204, rng.randint(80, 600) if method == "PUT" else 0


def _image_path(rng: random.Random) -> str:
    w = rng.choice((160, 320, 640, 1280))
    return f"/images/products/{rng.randint(1, 50000)}_{w}x{w * 3 // 4}.jpg"


def _static_path(rng: random.Random) -> str:
    kind = rng.choice(("js/app.{h}.js", "js/vendor.{h}.js", "css/main.{h}.css"))
    return "/static/" + kind.format(h=random_hex(rng, 8))


# The requests, by cumulative share.
_REQUESTS: tuple[tuple[float, Callable[[random.Random], Request]], ...] = (
    (0.22, _request("GET", lambda rng: f"/api/v1/orders/{rng.randint(1000, 99999)}",
                    ((200, 90), (404, 6), (500, 2), (502, 2)), (300, 2400))),
    (0.36, _request("GET", lambda rng: f"/api/v1/products?page={rng.randint(1, 40)}&size={rng.choice((20, 50, 100))}",
                    ((200, 96), (503, 2), (499, 2)), (4000, 60000))),
    (0.44, _request("POST", lambda rng: "/api/v1/orders", ((201, 88), (400, 7), (422, 3), (500, 2)), (200, 900))),
    (0.52, _request("GET", lambda rng: f"/api/v1/users/{random_uuid(rng)}/cart",
                    ((200, 92), (401, 6), (404, 2)), (100, 3000))),
    (0.58, _cart_item),
    (0.72, _request("GET", _static_path, ((200, 55), (304, 45)), (20000, 900000), empty_unless_ok=True)),
    (0.80, _request("GET", _image_path, ((200, 80), (304, 15), (404, 5)), (5000, 400000), empty_unless_ok=True)),
    (0.86, _request("GET", lambda rng: f"/search?q={rng.choice(_SEARCH_WORDS)}&page={rng.randint(1, 5)}",
                    200, (2000, 40000))),
    (0.91, _request("POST", lambda rng: "/api/v1/payments", ((200, 85), (402, 8), (502, 4), (504, 3)), (120, 400))),
    (0.97, _request("GET", lambda rng: rng.choice(("/healthz", "/readyz")), 200, 2)),
    (1.0, _request("GET", lambda rng: rng.choice(("/favicon.ico", "/robots.txt", "/")),
                   ((200, 70), (301, 20), (404, 10)), (0, 5000))),
)


def _web_request(rng: random.Random) -> Request:
    """Return (method, path, status, body bytes) for one request."""
    n = rng.random()
    return next(draw for share, draw in _REQUESTS if n < share)(rng)


def _nginx_access(rng: random.Random, pod: Pod, ts_ns: int) -> str:
    dt = utc(ts_ns)
    stamp = f"{dt.day:02d}/{MONTHS[dt.month - 1]}/{dt.year:04d}:{dt:%H:%M:%S} +0000"
    method, path, status, size = _web_request(rng)
    if path in ("/healthz", "/readyz"):
        agent, referer, client = "kube-probe/1.20", "-", private_ip(rng)
    else:
        agent = _user_agent(rng)
        referer = rng.choice(("-", "-", "https://shop.example.com/", "https://shop.example.com/cart",
                              f"https://shop.example.com/products/{rng.randint(1, 50000)}",
                              "https://www.google.com/"))
        client = client_ip(rng)
    request_time = rng.lognormvariate(-4.0, 1.1) if status < 500 else rng.uniform(0.5, 60.0)
    return (f'{client} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "{referer}" "{agent}" '
            f"{request_time:.3f}")


def _nginx_error(rng: random.Random, pod: Pod, ts_ns: int) -> str:
    dt = utc(ts_ns)
    pod.counter += rng.randint(1, 40)
    worker = rng.choice(pod.pids)
    method, path, _, _ = _web_request(rng)
    client = client_ip(rng)
    upstream = f"http://10.1.{rng.randint(0, 15)}.{rng.randint(2, 250)}:8080{path}"
    tail = (f'client: {client}, server: shop.example.com, request: "{method} {path} HTTP/1.1", '
            f'upstream: "{upstream}", host: "shop.example.com"')
    level, message = weighted(rng, (
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


def emit_web(rng: random.Random, pod: Pod, ts_ns: int) -> list[tuple[int, str]]:
    if rng.random() < 0.9:
        return [(ts_ns, _nginx_access(rng, pod, ts_ns))]
    return [(ts_ns, _nginx_error(rng, pod, ts_ns))]
