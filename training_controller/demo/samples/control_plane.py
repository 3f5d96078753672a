"""The Kubernetes API server: klog lines of requests, watches and quota evaluators."""

from __future__ import annotations

import random
from datetime import datetime

from training_controller.demo.samples.common import MONTHS, Pod, private_ip, utc, weighted

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


def emit_control_plane(rng: random.Random, pod: Pod, ts_ns: int) -> list[tuple[int, str]]:
    dt = utc(ts_ns)
    tid = rng.choice(pod.pids)
    kind = rng.random()
    if kind < 0.55:
        ns = rng.choice(_K8S_NAMESPACES)
        resource = rng.choice(_K8S_RESOURCES)
        verb = weighted(rng, (("GET", 5), ("LIST", 3), ("WATCH", 2), ("PUT", 2), ("PATCH", 1), ("POST", 1)))
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
        status = weighted(rng, ((200, 90), (201, 3), (404, 4), (409, 2), (500, 1)))
        latency = rng.lognormvariate(1.0, 1.0)
        latency_s = f"{latency:.1f}ms" if latency < 1000 else f"{latency / 1000:.3f}s"
        message = (f'"HTTP" verb="{verb}" URI="{uri}" latency="{latency_s}" userAgent="{rng.choice(_K8S_AGENTS)}" '
                   f'srcIP="{private_ip(rng)}:{rng.randint(30000, 60999)}" resp={status}')
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
        start = utc(ts_ns - total * 1_000_000)
        message = (f'Trace[{rng.randint(100000000, 2147483647)}]: "List etcd3" key:/{resource}/{ns},'
                   f"resourceVersion:,resourceVersionMatch:,limit:500,continue: "
                   f"({start.day:02d}-{MONTHS[start.month - 1]}-{start.year} {start:%H:%M:%S}."
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
