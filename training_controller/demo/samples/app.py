"""A Spring Boot payment service: requests, and now and then a stack trace."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

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


# The everyday lines, by cumulative share: (share, level, thread (None: the request's), logger, message).
# A message draws its random values in the order they appear in it.
_LINES: tuple[tuple[float, str, str | None, str, Callable[[random.Random, _Charge], str]], ...] = (
    (0.40, "INFO", None, _CONTROLLER,
     lambda rng, c: f"Processed payment {c.payment} for order {c.order} in {rng.randint(8, 900)} ms"),
    (0.65, "INFO", None, "c.e.payment.PaymentService",
     lambda rng, c: f"Received charge request for order {c.order}: amount={c.amount} {c.currency}, "
                    f"method={rng.choice(('card', 'paypal', 'sepa'))}"),
    (0.77, "INFO", "scheduling-1", "c.e.payment.settlement.SettlementJob",
     lambda rng, c: f"Settled batch {random_hex(rng, 12)}: {rng.randint(1, 400)} transactions, "
                    f"total {rng.uniform(100, 90000):.2f} {c.currency}"),
    (0.87, "WARN", None, "c.e.payment.gateway.GatewayClient",
     lambda rng, c: f"Retrying gateway call for payment {c.payment} (attempt {rng.randint(2, 3)}/3) after "
                    f"{rng.choice((250, 500, 1000))} ms: Read timed out"),
    (0.92, "WARN", "HikariPool-1 housekeeper", "com.zaxxer.hikari.pool.HikariPool",
     lambda rng, c: f"HikariPool-1 - Thread starvation or clock leap detected "
                    f"(housekeeper delta={rng.randint(1, 5)}m{rng.randint(0, 59)}s{rng.randint(0, 999)}ms)."),
    (0.97, "ERROR", None, "c.e.payment.PaymentService",
     lambda rng, c: f"Payment {c.payment} declined by gateway: code="
                    f"{rng.choice(('card_declined', 'insufficient_funds', 'expired_card', 'do_not_honor'))}"),
    (1.0, "INFO", None, "o.s.web.servlet.DispatcherServlet",
     lambda rng, c: f"Completed initialization in {rng.randint(1, 20)} ms"),
)


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
    _, level, line_thread, logger, message = next(line for line in _LINES if kind < line[0])
    return [(ts_ns, _spring(dt, level, line_thread or thread, logger, message(rng, charge)))]
