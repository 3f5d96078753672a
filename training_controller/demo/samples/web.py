"""An nginx ingress: access lines of a shop and its API, and some errors."""

from __future__ import annotations

import random

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


def _web_request(rng: random.Random) -> tuple[str, str, int, int]:
    """Return (method, path, status, body bytes) for one request."""
    n = rng.random()
    if n < 0.22:
        method, path = "GET", f"/api/v1/orders/{rng.randint(1000, 99999)}"
        status = weighted(rng, ((200, 90), (404, 6), (500, 2), (502, 2)))
        size = rng.randint(300, 2400)
    elif n < 0.36:
        method = "GET"
        path = f"/api/v1/products?page={rng.randint(1, 40)}&size={rng.choice((20, 50, 100))}"
        status = weighted(rng, ((200, 96), (503, 2), (499, 2)))
        size = rng.randint(4000, 60000)
    elif n < 0.44:
        method, path = "POST", "/api/v1/orders"
        status = weighted(rng, ((201, 88), (400, 7), (422, 3), (500, 2)))
        size = rng.randint(200, 900)
    elif n < 0.52:
        method, path = "GET", f"/api/v1/users/{random_uuid(rng)}/cart"
        status = weighted(rng, ((200, 92), (401, 6), (404, 2)))
        size = rng.randint(100, 3000)
    elif n < 0.58:
        method = rng.choice(("PUT", "DELETE"))
        path = f"/api/v1/cart/{rng.randint(10000, 999999)}/items/{rng.randint(1, 99999)}"
        status = 200 if method == "PUT" else 204
        size = rng.randint(80, 600) if method == "PUT" else 0
    elif n < 0.72:
        kind = rng.choice(("js/app.{h}.js", "js/vendor.{h}.js", "css/main.{h}.css"))
        method, path = "GET", "/static/" + kind.format(h=random_hex(rng, 8))
        status = weighted(rng, ((200, 55), (304, 45)))
        size = rng.randint(20000, 900000) if status == 200 else 0
    elif n < 0.80:
        method = "GET"
        w = rng.choice((160, 320, 640, 1280))
        path = f"/images/products/{rng.randint(1, 50000)}_{w}x{w * 3 // 4}.jpg"
        status = weighted(rng, ((200, 80), (304, 15), (404, 5)))
        size = rng.randint(5000, 400000) if status == 200 else 0
    elif n < 0.86:
        method, path = "GET", f"/search?q={rng.choice(_SEARCH_WORDS)}&page={rng.randint(1, 5)}"
        status = 200
        size = rng.randint(2000, 40000)
    elif n < 0.91:
        method, path = "POST", "/api/v1/payments"
        status = weighted(rng, ((200, 85), (402, 8), (502, 4), (504, 3)))
        size = rng.randint(120, 400)
    elif n < 0.97:
        method, path = "GET", rng.choice(("/healthz", "/readyz"))
        status, size = 200, 2
    else:
        method, path = "GET", rng.choice(("/favicon.ico", "/robots.txt", "/"))
        status = weighted(rng, ((200, 70), (301, 20), (404, 10)))
        size = rng.randint(0, 5000)
    return method, path, int(status), size


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
