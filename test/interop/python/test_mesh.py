"""The mesh as a Python grpcio client sees it: every service over gRPC (h2c),
unary calls and server streams, and errors with their FlowOrchestrator detail.

Each test uses ids of its own, so the tests neither depend on each other nor
on the order they run in.
"""

import json
import urllib.request
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from floworchestrator.common.v1 import error_pb2
from floworchestrator.datastore.v1 import datastore_service_pb2 as ds
from floworchestrator.datastore.v1 import datastore_service_pb2_grpc as ds_grpc
from floworchestrator.datastore.v1 import service_registry_pb2 as registry
from floworchestrator.memory.v1 import memory_manager_service_pb2 as mm
from floworchestrator.memory.v1 import memory_manager_service_pb2_grpc as mm_grpc
from floworchestrator.memory.v1 import memory_pb2
from floworchestrator.messaging.v1 import message_bus_service_pb2 as mb
from floworchestrator.messaging.v1 import message_bus_service_pb2_grpc as mb_grpc
from floworchestrator.messaging.v1 import message_pb2
from floworchestrator.telemetry.v1 import telemetry_pb2
from floworchestrator.telemetry.v1 import telemetry_service_pb2 as ts
from floworchestrator.telemetry.v1 import telemetry_service_pb2_grpc as ts_grpc

# Every call has a deadline, so a mesh that stops answering fails the test
# instead of hanging the run.
UNARY = 10
STREAM = 30


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def next_event(stream, heartbeat, type_of=lambda item: item.type):
    """The next stream item that is not a keep-alive heartbeat."""
    for item in stream:
        if type_of(item) != heartbeat:
            return item
    raise AssertionError("stream ended")


def error_detail(call) -> error_pb2.ErrorDetail:
    """The FlowOrchestrator detail of a failed call's rich status."""
    status = rpc_status.from_call(call)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == call.code().value[0]
    found = [d for d in status.details if d.Is(error_pb2.ErrorDetail.DESCRIPTOR)]
    assert len(found) == 1, [d.type_url for d in status.details]
    detail = error_pb2.ErrorDetail()
    assert found[0].Unpack(detail)
    return detail


def bad_fields(call) -> list[str]:
    """The fields named by the google.rpc.BadRequest detail of a failed call."""
    status = rpc_status.from_call(call)
    found = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    assert len(found) == 1, [d.type_url for d in status.details]
    request = error_details_pb2.BadRequest()
    assert found[0].Unpack(request)
    return [v.field for v in request.field_violations]


def document(value: dict) -> struct_pb2.Struct:
    doc = struct_pb2.Struct()
    doc.update(value)
    return doc


# --- DataStore ---------------------------------------------------------------


def test_datastore_create_then_get_entity(channel):
    store = ds_grpc.DataStoreServiceStub(channel)
    entity_id = uid("py-flow")
    created = store.CreateEntity(
        ds.CreateEntityRequest(
            kind="flow",
            id=entity_id,
            document=document({"name": "Import orders", "steps": 3, "tags": ["csv"]}),
            labels={"team": "billing"},
        ),
        timeout=UNARY,
    ).entity
    assert (created.id, created.version) == (entity_id, 1)
    assert created.create_time.seconds > 0

    got = store.GetEntity(ds.GetEntityRequest(kind="flow", id=entity_id), timeout=UNARY).entity
    assert got.version == 1
    assert dict(got.labels) == {"team": "billing"}
    assert got.document["name"] == "Import orders"
    assert got.document["steps"] == 3
    assert list(got.document["tags"]) == ["csv"]


def test_datastore_watch_services_streams_a_registration(channel):
    store = ds_grpc.DataStoreServiceStub(channel)
    service_id = uid("py-importer")
    Type = registry.ServiceEvent.Type

    def of_event(item):
        return item.event.type

    stream = store.WatchServices(ds.WatchServicesRequest(service_id=service_id), timeout=STREAM)
    try:
        # Nothing is registered under this id yet: the snapshot is empty.
        first = next_event(stream, Type.TYPE_HEARTBEAT, of_event).event
        assert first.type == Type.TYPE_SNAPSHOT_COMPLETE

        registered = store.RegisterService(
            ds.RegisterServiceRequest(
                service=registry.ServiceRecord(
                    service_id=service_id,
                    version="1.2.0",
                    service_type="importer",
                    endpoints=["127.0.0.1:7001"],
                ),
                lease_duration=duration_pb2.Duration(seconds=60),
            ),
            timeout=UNARY,
        )
        assert registered.created

        change = next_event(stream, Type.TYPE_HEARTBEAT, of_event).event
        assert change.type == Type.TYPE_REGISTERED
        assert (change.service.service_id, change.service.version) == (service_id, "1.2.0")
        assert list(change.service.endpoints) == ["127.0.0.1:7001"]
    finally:
        stream.cancel()


# --- MemoryManager -------------------------------------------------------------


def test_memory_allocate_write_read(channel):
    memory = mm_grpc.MemoryManagerServiceStub(channel)
    address = memory_pb2.AddressRef(text=f"{uid('EXEC')}:FLOW-1:PROCESS:main:2:Result")
    allocated = memory.Allocate(
        mm.AllocateRequest(
            address=address,
            owner="py-transform",
            ttl=duration_pb2.Duration(seconds=600),
            content_type="application/json",
        ),
        timeout=UNARY,
    ).entry
    assert allocated.version == 0

    data = json.dumps({"rows": 3}).encode()
    written = memory.Write(
        mm.WriteRequest(address=address, owner="py-transform", data=data, expected_version=0),
        timeout=UNARY,
    ).entry
    assert written.version == 1

    read = memory.Read(mm.ReadRequest(address=address), timeout=UNARY)
    assert read.data == data
    assert read.entry.content_type == "application/json"


def test_memory_watch_streams_allocation_and_write(channel):
    memory = mm_grpc.MemoryManagerServiceStub(channel)
    execution = uid("EXEC")
    text = f"{execution}:FLOW-1:IMPORT:main:1:Rows"
    Type = mm.WatchMemoryResponse.Type
    stream = memory.WatchMemory(mm.WatchMemoryRequest(execution_id=execution), timeout=STREAM)
    try:
        assert next_event(stream, Type.TYPE_HEARTBEAT).type == Type.TYPE_STARTED

        address = memory_pb2.AddressRef(text=text)
        memory.Allocate(mm.AllocateRequest(address=address, owner="py-import"), timeout=UNARY)
        allocated = next_event(stream, Type.TYPE_HEARTBEAT)
        assert (allocated.type, allocated.address) == (Type.TYPE_ALLOCATED, text)

        memory.Write(
            mm.WriteRequest(address=address, owner="py-import", data=b"\x00\x01"), timeout=UNARY
        )
        written = next_event(stream, Type.TYPE_HEARTBEAT)
        assert (written.type, written.address) == (Type.TYPE_WRITTEN, text)
        assert written.entry.version == 1
    finally:
        stream.cancel()


# --- MessageBus ----------------------------------------------------------------


def test_messagebus_publish_subscribe_ack(channel):
    bus = mb_grpc.MessageBusServiceStub(channel)
    event_type = uid("PyFlowStarted")
    stream = bus.Subscribe(
        mb.SubscribeRequest(
            group=uid("py-monitor"),
            event_types=[event_type],
            start=mb.START_POSITION_EARLIEST,
            ack_deadline=duration_pb2.Duration(seconds=60),
        ),
        timeout=STREAM,
    )
    try:
        first = next(stream)
        assert first.WhichOneof("event") == "subscribed"
        assert first.subscribed.subscription_id

        message_id = uid("evt")
        payload = json.dumps({"flowId": "FLOW-1"}).encode()
        event = message_pb2.Envelope(
            message_id=message_id,
            message_type=event_type,
            partition_key="EXEC-1",
            content_type="application/json",
            payload=payload,
        )
        receipt = bus.PublishEvent(mb.PublishEventRequest(event=event), timeout=UNARY).receipt
        assert (receipt.message_id, receipt.duplicate) == (message_id, False)
        # The message id is the idempotency key: the same id again is a duplicate.
        again = bus.PublishEvent(mb.PublishEventRequest(event=event), timeout=UNARY).receipt
        assert again.duplicate

        item = next(stream)
        assert item.WhichOneof("event") == "delivery"
        delivery = item.delivery
        assert delivery.attempt == 1
        assert (delivery.message.message_id, delivery.message.payload) == (message_id, payload)

        bus.Ack(mb.AckRequest(delivery_id=delivery.delivery_id), timeout=UNARY)
        # Settled by the first Ack: the delivery is no longer in flight.
        with pytest.raises(grpc.RpcError) as again_ack:
            bus.Ack(mb.AckRequest(delivery_id=delivery.delivery_id), timeout=UNARY)
        assert again_ack.value.code() == grpc.StatusCode.NOT_FOUND
        detail = error_detail(again_ack.value)
        assert detail.code == "RESOURCE_ERROR.NOT_FOUND"
        assert detail.metadata["delivery_id"] == delivery.delivery_id
    finally:
        stream.cancel()


# --- Telemetry -----------------------------------------------------------------


def test_telemetry_record_metrics_reaches_prometheus(channel, mesh_addr):
    telemetry = ts_grpc.TelemetryServiceStub(channel)
    name = f"interop.python.{uuid.uuid4().hex[:8]}.rows"
    recorded = telemetry.RecordMetrics(
        ts.RecordMetricsRequest(
            points=[
                telemetry_pb2.MetricPoint(
                    name=name, kind=telemetry_pb2.METRIC_KIND_COUNTER, value=120
                )
            ]
        ),
        timeout=UNARY,
    )
    assert recorded.recorded_count == 1

    # Same port, plain HTTP; no proxy may intercept loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{mesh_addr}/metrics", timeout=UNARY) as res:
        metrics = res.read().decode()
    series = [line for line in metrics.splitlines() if line.startswith(name.replace(".", "_"))]
    assert series, f"{name} not in /metrics"
    assert series[0].endswith(" 120")


def test_telemetry_get_health_lists_every_service(channel):
    health = ts_grpc.TelemetryServiceStub(channel).GetHealth(ts.GetHealthRequest(), timeout=UNARY)
    assert health.status == telemetry_pb2.SERVING_STATUS_SERVING
    statuses = {c.name: c.status for c in health.components}
    for service in (
        "floworchestrator.datastore.v1.DataStoreService",
        "floworchestrator.memory.v1.MemoryManagerService",
        "floworchestrator.messaging.v1.MessageBusService",
        "floworchestrator.telemetry.v1.TelemetryService",
    ):
        assert statuses.get(service) == telemetry_pb2.SERVING_STATUS_SERVING, service


def test_telemetry_watch_health_starts_with_a_snapshot(channel):
    Type = ts.WatchHealthResponse.Type
    stream = ts_grpc.TelemetryServiceStub(channel).WatchHealth(
        ts.WatchHealthRequest(), timeout=STREAM
    )
    try:
        snapshot = next_event(stream, Type.TYPE_HEARTBEAT)
        assert snapshot.type == Type.TYPE_SNAPSHOT
        assert snapshot.status == telemetry_pb2.SERVING_STATUS_SERVING
        names = {c.name for c in snapshot.components}
        assert "floworchestrator.datastore.v1.DataStoreService" in names
    finally:
        stream.cancel()


# --- Errors --------------------------------------------------------------------


def test_error_not_found_carries_the_flow_orchestrator_code(channel):
    store = ds_grpc.DataStoreServiceStub(channel)
    missing = uid("missing")
    with pytest.raises(grpc.RpcError) as failed:
        store.GetEntity(ds.GetEntityRequest(kind="flow", id=missing), timeout=UNARY)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    detail = error_detail(failed.value)
    assert detail.code == "RESOURCE_ERROR.NOT_FOUND"
    assert detail.severity == error_pb2.ERROR_SEVERITY_MAJOR


def test_error_invalid_argument_names_the_bad_field(channel):
    memory = mm_grpc.MemoryManagerServiceStub(channel)
    with pytest.raises(grpc.RpcError) as failed:
        memory.Allocate(
            mm.AllocateRequest(address=memory_pb2.AddressRef(text="not-an-address"), owner="py"),
            timeout=UNARY,
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_detail(failed.value).code == "DATA_ERROR.INVALID_ARGUMENT"
    assert bad_fields(failed.value) == ["address"]


def test_error_on_a_stream_carries_the_detail_too(channel):
    memory = mm_grpc.MemoryManagerServiceStub(channel)
    # A branch filter without its execution is refused before the stream opens.
    stream = memory.WatchMemory(mm.WatchMemoryRequest(branch_path_prefix="main"), timeout=STREAM)
    with pytest.raises(grpc.RpcError):
        next(stream)
    # The stream object is the call: its status and trailers carry the error.
    assert stream.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_detail(stream).code == "DATA_ERROR.INVALID_ARGUMENT"
    assert bad_fields(stream) == ["branch_path_prefix"]
