"""A PostgreSQL server: statements, checkpoints, connections, and some errors."""

from __future__ import annotations

import random

from training_controller.demo.samples.common import Pod, private_ip, random_uuid, utc, weighted

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


def emit_db(rng: random.Random, pod: Pod, ts_ns: int) -> list[tuple[int, str]]:
    dt = utc(ts_ns)
    prefix = f"{dt:%Y-%m-%d %H:%M:%S}.{dt.microsecond // 1000:03d} UTC"
    checkpointer, autovacuum = pod.pids
    backend = rng.randint(1000, 65000)
    user, database = rng.choice(_PG_USERS)
    host, port = private_ip(rng), rng.randint(32768, 60999)
    kind = rng.random()
    if kind < 0.35:
        statement = rng.choice(_PG_STATEMENTS).format(
            n=rng.randint(1, 999999), k=rng.randint(1, 60), uuid=random_uuid(rng),
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
        message = weighted(rng, (
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
