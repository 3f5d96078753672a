"""A Spring Boot payment service: requests, and now and then a stack trace."""

from __future__ import annotations

import random
import re
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import yaml

from training_controller.demo.samples.common import NS_PER_US, Pod, random_hex, random_uuid, utc

# --- 4. payment-service (Spring Boot) --------------------------------------------------------------------

_CONTROLLER = "c.e.payment.PaymentController"

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
    payment, order = random_uuid(rng), rng.randint(1000, 99999)
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


class _Charge(NamedTuple):
    """The payment an everyday line is about."""

    payment: str
    order: int
    amount: str
    currency: str


# The everyday lines, with their shares, levels, threads and loggers, are data: app_lines.yaml.
_TEMPLATES = Path(__file__).with_name("app_lines.yaml")
_FIELD = re.compile(r"\{([a-z]+)(?::([^}]*))?\}")


class _Line(NamedTuple):
    """One kind of everyday line: drawn while a uniform draw is below `share` (cumulative)."""

    share: float
    level: str
    thread: str | None  # None: the request's own thread
    logger: str
    message: str  # a template: see app_lines.yaml


def _load_lines() -> tuple[_Line, ...]:
    lines = tuple(_Line(**{"thread": None, **entry}) for entry in yaml.safe_load(_TEMPLATES.read_text()))
    assert [line.share for line in lines] == sorted(line.share for line in lines) and lines[-1].share == 1.0
    return lines


_LINES = _load_lines()


def _render(template: str, rng: random.Random, charge: _Charge) -> str:
    """The template with its fields filled in, left to right, so random values are drawn in that order."""

    def value(m: re.Match[str]) -> str:
        kind, arg = m.group(1), m.group(2) or ""
        if kind == "int":
            low, high = arg.split(":")
            return str(rng.randint(int(low), int(high)))
        if kind == "choice":
            return str(rng.choice(tuple(arg.split(","))))
        if kind == "hex":
            return random_hex(rng, int(arg))
        if kind == "uniform":
            low, high, fmt = arg.split(":")
            return format(rng.uniform(float(low), float(high)), fmt)
        return str(getattr(charge, kind))

    return _FIELD.sub(value, template)



def emit_app(rng: random.Random, pod: Pod, ts_ns: int) -> list[tuple[int, str]]:
    dt = utc(ts_ns)
    thread = f"http-nio-8080-exec-{rng.randint(1, 10)}"
    controller = _CONTROLLER
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
            t += rng.randint(1, 40) * NS_PER_US
            out.append((t, line))
        return out
    charge = _Charge(
        payment=random_uuid(rng), order=rng.randint(1000, 99999), amount=f"{rng.uniform(1, 900):.2f}",
        currency=rng.choice(("EUR", "USD", "GBP")),
    )
    kind = rng.random()
    line = next(line for line in _LINES if kind < line.share)
    return [(ts_ns, _spring(dt, line.level, line.thread or thread, line.logger, _render(line.message, rng, charge)))]
