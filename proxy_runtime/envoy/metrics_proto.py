"""The two messages of Envoy's metrics service that xds-protos does not ship (it leaves out
`envoy.service.metrics.v3`, which depends on Prometheus' client_model), described here field
for field from their .proto definitions and built into a private descriptor pool, so decoding
needs no generated code and no other package.

    envoy.service.metrics.v3.StreamMetricsMessage { Identifier identifier = 1;
                                                    repeated MetricFamily envoy_metrics = 2; }
    io.prometheus.client.MetricFamily { name = 1; help = 2; type = 3; repeated Metric metric = 4; }
    Metric { repeated LabelPair label = 1; Gauge gauge = 2; Counter counter = 3;
             Summary summary = 4; Untyped untyped = 5; int64 timestamp_ms = 6;
             Histogram histogram = 7; }
    Histogram { uint64 sample_count = 1; double sample_sum = 2; repeated Bucket bucket = 3; }
    Bucket { uint64 cumulative_count = 1; double upper_bound = 2; }

The identifier (Envoy's node) is not described: its bytes are kept as an unknown field.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

METHOD = "/envoy.service.metrics.v3.MetricsService/StreamMetrics"

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _msg(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
    m = descriptor_pb2.DescriptorProto(name=name)
    for fname, number, label, ftype, type_name in fields:
        f = m.field.add(name=fname, number=number, label=label, type=ftype)
        if type_name:
            f.type_name = type_name
    return m


def _build() -> tuple[Any, Any]:
    prom = descriptor_pb2.FileDescriptorProto(name="meshcd/prometheus_metrics.proto",
                                              package="io.prometheus.client", syntax="proto2")
    enum = prom.enum_type.add(name="MetricType")
    for i, n in enumerate(("COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM", "GAUGE_HISTOGRAM")):
        enum.value.add(name=n, number=i)
    p = ".io.prometheus.client."
    prom.message_type.extend([
        _msg("LabelPair", ("name", 1, _OPT, _F.TYPE_STRING, ""), ("value", 2, _OPT, _F.TYPE_STRING, "")),
        _msg("Gauge", ("value", 1, _OPT, _F.TYPE_DOUBLE, "")),
        _msg("Counter", ("value", 1, _OPT, _F.TYPE_DOUBLE, "")),
        _msg("Quantile", ("quantile", 1, _OPT, _F.TYPE_DOUBLE, ""),
             ("value", 2, _OPT, _F.TYPE_DOUBLE, "")),
        _msg("Summary", ("sample_count", 1, _OPT, _F.TYPE_UINT64, ""),
             ("sample_sum", 2, _OPT, _F.TYPE_DOUBLE, ""),
             ("quantile", 3, _REP, _F.TYPE_MESSAGE, p + "Quantile")),
        _msg("Untyped", ("value", 1, _OPT, _F.TYPE_DOUBLE, "")),
        _msg("Bucket", ("cumulative_count", 1, _OPT, _F.TYPE_UINT64, ""),
             ("upper_bound", 2, _OPT, _F.TYPE_DOUBLE, "")),
        _msg("Histogram", ("sample_count", 1, _OPT, _F.TYPE_UINT64, ""),
             ("sample_sum", 2, _OPT, _F.TYPE_DOUBLE, ""),
             ("bucket", 3, _REP, _F.TYPE_MESSAGE, p + "Bucket")),
        _msg("Metric", ("label", 1, _REP, _F.TYPE_MESSAGE, p + "LabelPair"),
             ("gauge", 2, _OPT, _F.TYPE_MESSAGE, p + "Gauge"),
             ("counter", 3, _OPT, _F.TYPE_MESSAGE, p + "Counter"),
             ("summary", 4, _OPT, _F.TYPE_MESSAGE, p + "Summary"),
             ("untyped", 5, _OPT, _F.TYPE_MESSAGE, p + "Untyped"),
             ("timestamp_ms", 6, _OPT, _F.TYPE_INT64, ""),
             ("histogram", 7, _OPT, _F.TYPE_MESSAGE, p + "Histogram")),
        _msg("MetricFamily", ("name", 1, _OPT, _F.TYPE_STRING, ""),
             ("help", 2, _OPT, _F.TYPE_STRING, ""),
             ("type", 3, _OPT, _F.TYPE_ENUM, p + "MetricType"),
             ("metric", 4, _REP, _F.TYPE_MESSAGE, p + "Metric")),
    ])
    svc = descriptor_pb2.FileDescriptorProto(name="meshcd/metrics_service.proto",
                                             package="envoy.service.metrics.v3", syntax="proto3",
                                             dependency=[prom.name])
    svc.message_type.extend([
        _msg("StreamMetricsMessage", ("envoy_metrics", 2, _REP, _F.TYPE_MESSAGE, p + "MetricFamily")),
        _msg("StreamMetricsResponse"),
    ])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(prom)
    pool.Add(svc)
    message = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("envoy.service.metrics.v3.StreamMetricsMessage"))
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("envoy.service.metrics.v3.StreamMetricsResponse"))
    return message, response


StreamMetricsMessage, StreamMetricsResponse = _build()
