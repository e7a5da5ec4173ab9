// Go clients against a running mesh (FO_MESH_URL, e.g. http://127.0.0.1:8080):
// every service, one unary call and one server stream each, plus errors with
// their FlowOrchestrator detail, through grpc-go (h2c) and connect-go (Connect
// over h2c and HTTP/1.1, gRPC-Web over HTTP/1.1). The stubs come from
// `buf generate --template test/interop/go/buf.gen.yaml` (see buf.gen.yaml).
package interop

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	commonv1 "floworchestrator/interop/gen/floworchestrator/common/v1"
	datastorev1 "floworchestrator/interop/gen/floworchestrator/datastore/v1"
	"floworchestrator/interop/gen/floworchestrator/datastore/v1/datastorev1connect"
	memoryv1 "floworchestrator/interop/gen/floworchestrator/memory/v1"
	"floworchestrator/interop/gen/floworchestrator/memory/v1/memoryv1connect"
	messagingv1 "floworchestrator/interop/gen/floworchestrator/messaging/v1"
	"floworchestrator/interop/gen/floworchestrator/messaging/v1/messagingv1connect"
	telemetryv1 "floworchestrator/interop/gen/floworchestrator/telemetry/v1"
	"floworchestrator/interop/gen/floworchestrator/telemetry/v1/telemetryv1connect"
)

// unary and stream hide which client library made the call, so each
// scenario below is written once and run over every stack.
type unary[Req, Res any] func(context.Context, *Req) (*Res, error)

type stream[Req, Res any] func(context.Context, *Req) (func() (*Res, error), error)

type stack struct {
	name string

	createEntity    unary[datastorev1.CreateEntityRequest, datastorev1.CreateEntityResponse]
	getEntity       unary[datastorev1.GetEntityRequest, datastorev1.GetEntityResponse]
	registerService unary[datastorev1.RegisterServiceRequest, datastorev1.RegisterServiceResponse]
	watchServices   stream[datastorev1.WatchServicesRequest, datastorev1.WatchServicesResponse]

	allocate    unary[memoryv1.AllocateRequest, memoryv1.AllocateResponse]
	write       unary[memoryv1.WriteRequest, memoryv1.WriteResponse]
	read        unary[memoryv1.ReadRequest, memoryv1.ReadResponse]
	watchMemory stream[memoryv1.WatchMemoryRequest, memoryv1.WatchMemoryResponse]

	publishEvent unary[messagingv1.PublishEventRequest, messagingv1.PublishEventResponse]
	subscribe    stream[messagingv1.SubscribeRequest, messagingv1.SubscribeResponse]
	ack          unary[messagingv1.AckRequest, messagingv1.AckResponse]

	recordMetrics unary[telemetryv1.RecordMetricsRequest, telemetryv1.RecordMetricsResponse]
	getHealth     unary[telemetryv1.GetHealthRequest, telemetryv1.GetHealthResponse]
	watchHealth   stream[telemetryv1.WatchHealthRequest, telemetryv1.WatchHealthResponse]

	// status reads the code and the details of a failed call the way this
	// client library exposes them.
	status func(error) (codes.Code, []proto.Message)
}

func grpcUnary[Req, Res any](f func(context.Context, *Req, ...grpc.CallOption) (*Res, error)) unary[Req, Res] {
	return func(ctx context.Context, req *Req) (*Res, error) { return f(ctx, req) }
}

func grpcStream[Req, Res any](f func(context.Context, *Req, ...grpc.CallOption) (grpc.ServerStreamingClient[Res], error)) stream[Req, Res] {
	return func(ctx context.Context, req *Req) (func() (*Res, error), error) {
		s, err := f(ctx, req)
		if err != nil {
			return nil, err
		}
		return s.Recv, nil
	}
}

func connectUnary[Req, Res any](f func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) unary[Req, Res] {
	return func(ctx context.Context, req *Req) (*Res, error) {
		res, err := f(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
}

func connectStream[Req, Res any](f func(context.Context, *connect.Request[Req]) (*connect.ServerStreamForClient[Res], error)) stream[Req, Res] {
	return func(ctx context.Context, req *Req) (func() (*Res, error), error) {
		s, err := f(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return func() (*Res, error) {
			if s.Receive() {
				return s.Msg(), nil
			}
			if err := s.Err(); err != nil {
				return nil, err
			}
			return nil, errors.New("stream ended")
		}, nil
	}
}

func meshURL(t *testing.T) string {
	t.Helper()
	raw := os.Getenv("FO_MESH_URL")
	if raw == "" {
		t.Fatal("FO_MESH_URL is not set (the mesh's base URL, e.g. http://127.0.0.1:8080)")
	}
	return raw
}

func grpcStack(t *testing.T) stack {
	u, err := url.Parse(meshURL(t))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ds := datastorev1.NewDataStoreServiceClient(conn)
	mm := memoryv1.NewMemoryManagerServiceClient(conn)
	mb := messagingv1.NewMessageBusServiceClient(conn)
	ts := telemetryv1.NewTelemetryServiceClient(conn)
	return stack{
		name:            "grpc-go",
		createEntity:    grpcUnary(ds.CreateEntity),
		getEntity:       grpcUnary(ds.GetEntity),
		registerService: grpcUnary(ds.RegisterService),
		watchServices:   grpcStream(ds.WatchServices),
		allocate:        grpcUnary(mm.Allocate),
		write:           grpcUnary(mm.Write),
		read:            grpcUnary(mm.Read),
		watchMemory:     grpcStream(mm.WatchMemory),
		publishEvent:    grpcUnary(mb.PublishEvent),
		subscribe:       grpcStream(mb.Subscribe),
		ack:             grpcUnary(mb.Ack),
		recordMetrics:   grpcUnary(ts.RecordMetrics),
		getHealth:       grpcUnary(ts.GetHealth),
		watchHealth:     grpcStream(ts.WatchHealth),
		status: func(err error) (codes.Code, []proto.Message) {
			// The details come from the grpc-status-details-bin trailer.
			st, ok := status.FromError(err)
			if !ok {
				return codes.Unknown, nil
			}
			var details []proto.Message
			for _, d := range st.Details() {
				if m, ok := d.(proto.Message); ok {
					details = append(details, m)
				}
			}
			return st.Code(), details
		},
	}
}

func connectStack(t *testing.T, name string, client *http.Client, opts ...connect.ClientOption) stack {
	base := meshURL(t)
	ds := datastorev1connect.NewDataStoreServiceClient(client, base, opts...)
	mm := memoryv1connect.NewMemoryManagerServiceClient(client, base, opts...)
	mb := messagingv1connect.NewMessageBusServiceClient(client, base, opts...)
	ts := telemetryv1connect.NewTelemetryServiceClient(client, base, opts...)
	return stack{
		name:            name,
		createEntity:    connectUnary(ds.CreateEntity),
		getEntity:       connectUnary(ds.GetEntity),
		registerService: connectUnary(ds.RegisterService),
		watchServices:   connectStream(ds.WatchServices),
		allocate:        connectUnary(mm.Allocate),
		write:           connectUnary(mm.Write),
		read:            connectUnary(mm.Read),
		watchMemory:     connectStream(mm.WatchMemory),
		publishEvent:    connectUnary(mb.PublishEvent),
		subscribe:       connectStream(mb.Subscribe),
		ack:             connectUnary(mb.Ack),
		recordMetrics:   connectUnary(ts.RecordMetrics),
		getHealth:       connectUnary(ts.GetHealth),
		watchHealth:     connectStream(ts.WatchHealth),
		status: func(err error) (codes.Code, []proto.Message) {
			var ce *connect.Error
			if !errors.As(err, &ce) {
				return codes.Unknown, nil
			}
			var details []proto.Message
			for _, d := range ce.Details() {
				m, err := d.Value()
				if err != nil {
					t.Errorf("undecodable error detail %s: %v", d.Type(), err)
					continue
				}
				details = append(details, m)
			}
			// Connect codes have the gRPC codes' numbers.
			return codes.Code(ce.Code()), details
		},
	}
}

func h2cClient() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: protocols}}
}

func http1Client() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Client{Transport: &http.Transport{Protocols: protocols}}
}

func stacks(t *testing.T) []stack {
	return []stack{
		grpcStack(t),
		connectStack(t, "connect-h2c", h2cClient()),
		connectStack(t, "connect-http1", http1Client()),
		connectStack(t, "grpcweb-http1", http1Client(), connect.WithGRPCWeb()),
	}
}

// next receives one stream item or fails the test.
func next[Res any](t *testing.T, recv func() (*Res, error)) *Res {
	t.Helper()
	res, err := recv()
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	return res
}

func must[Res any](t *testing.T, what string) func(*Res, error) *Res {
	return func(res *Res, err error) *Res {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return res
	}
}

func streamContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runID keeps ids of one run apart from an earlier run's on the same mesh
// (its stores persist).
var runID = strconv.FormatInt(time.Now().UnixNano(), 36)

// id names what one stack creates in this run.
func (s stack) id(prefix string) string { return prefix + "-" + s.name + "-" + runID }

func TestMesh(t *testing.T) {
	for _, s := range stacks(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Run("DataStore", func(t *testing.T) { dataStore(t, s) })
			t.Run("MemoryManager", func(t *testing.T) { memoryManager(t, s) })
			t.Run("MessageBus", func(t *testing.T) { messageBus(t, s) })
			t.Run("Telemetry", func(t *testing.T) { telemetry(t, s) })
			t.Run("Errors", func(t *testing.T) { errorDetails(t, s) })
		})
	}
}

func dataStore(t *testing.T, s stack) {
	ctx := context.Background()
	doc, err := structpb.NewStruct(map[string]any{"name": "Import orders", "steps": 3})
	if err != nil {
		t.Fatal(err)
	}
	created := must[datastorev1.CreateEntityResponse](t, "CreateEntity")(s.createEntity(ctx,
		&datastorev1.CreateEntityRequest{Kind: "flow", Id: s.id("go"), Document: doc, Labels: map[string]string{"client": s.name}}))
	if v := created.GetEntity().GetVersion(); v != 1 {
		t.Errorf("created version = %d, want 1", v)
	}
	got := must[datastorev1.GetEntityResponse](t, "GetEntity")(s.getEntity(ctx,
		&datastorev1.GetEntityRequest{Kind: "flow", Id: s.id("go")}))
	if !proto.Equal(got.GetEntity().GetDocument(), doc) || got.GetEntity().GetLabels()["client"] != s.name {
		t.Errorf("GetEntity = %v, want the created document and labels", got.GetEntity())
	}

	serviceType := s.id("go-watch")
	recv, err := s.watchServices(streamContext(t), &datastorev1.WatchServicesRequest{ServiceType: serviceType})
	if err != nil {
		t.Fatalf("WatchServices: %v", err)
	}
	if ev := next(t, recv).GetEvent(); ev.GetType() != datastorev1.ServiceEvent_TYPE_SNAPSHOT_COMPLETE {
		t.Fatalf("first event of an empty registry = %v, want SNAPSHOT_COMPLETE", ev)
	}
	must[datastorev1.RegisterServiceResponse](t, "RegisterService")(s.registerService(ctx, &datastorev1.RegisterServiceRequest{
		Service: &datastorev1.ServiceRecord{
			ServiceId: s.id("importer"), Version: "1.2.0", ServiceType: serviceType,
			Endpoints: []string{"127.0.0.1:7001"},
		},
		LeaseDuration: durationpb.New(time.Minute),
	}))
	for {
		ev := next(t, recv).GetEvent()
		if ev.GetType() == datastorev1.ServiceEvent_TYPE_HEARTBEAT {
			continue
		}
		if ev.GetType() != datastorev1.ServiceEvent_TYPE_REGISTERED || ev.GetService().GetServiceId() != s.id("importer") {
			t.Fatalf("event after RegisterService = %v, want REGISTERED %s", ev, s.id("importer"))
		}
		break
	}
}

func memoryManager(t *testing.T, s stack) {
	ctx := context.Background()
	execution := s.id("EXEC")
	address := &memoryv1.AddressRef{Kind: &memoryv1.AddressRef_Text{Text: execution + ":FLOW-1:PROCESS:main:2:Result"}}

	recv, err := s.watchMemory(streamContext(t), &memoryv1.WatchMemoryRequest{ExecutionId: execution})
	if err != nil {
		t.Fatalf("WatchMemory: %v", err)
	}
	if ev := next(t, recv); ev.GetType() != memoryv1.WatchMemoryResponse_TYPE_STARTED {
		t.Fatalf("first WatchMemory item = %v, want STARTED", ev)
	}

	must[memoryv1.AllocateResponse](t, "Allocate")(s.allocate(ctx, &memoryv1.AllocateRequest{
		Address: address, Owner: "go-client", Ttl: durationpb.New(10 * time.Minute), ContentType: "application/json",
	}))
	data := []byte(`{"rows":3}`)
	must[memoryv1.WriteResponse](t, "Write")(s.write(ctx, &memoryv1.WriteRequest{
		Address: address, Owner: "go-client", Data: data, ExpectedVersion: proto.Int64(0),
	}))
	read := must[memoryv1.ReadResponse](t, "Read")(s.read(ctx, &memoryv1.ReadRequest{Address: address}))
	if string(read.GetData()) != string(data) {
		t.Errorf("Read = %q, want %q", read.GetData(), data)
	}

	var seen []memoryv1.WatchMemoryResponse_Type
	for len(seen) < 2 {
		ev := next(t, recv)
		if ev.GetType() == memoryv1.WatchMemoryResponse_TYPE_HEARTBEAT {
			continue
		}
		seen = append(seen, ev.GetType())
	}
	if seen[0] != memoryv1.WatchMemoryResponse_TYPE_ALLOCATED || seen[1] != memoryv1.WatchMemoryResponse_TYPE_WRITTEN {
		t.Errorf("WatchMemory saw %v, want [ALLOCATED WRITTEN]", seen)
	}
}

func messageBus(t *testing.T, s stack) {
	ctx := context.Background()
	eventType := s.id("GoInterop")
	messageID := s.id("go-evt")
	recv, err := s.subscribe(streamContext(t), &messagingv1.SubscribeRequest{
		Group: s.id("go"), EventTypes: []string{eventType}, AckDeadline: durationpb.New(30 * time.Second),
	})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if first := next(t, recv); first.GetSubscribed() == nil {
		t.Fatalf("first Subscribe item = %v, want subscribed", first)
	}

	published := must[messagingv1.PublishEventResponse](t, "PublishEvent")(s.publishEvent(ctx, &messagingv1.PublishEventRequest{
		Event: &messagingv1.Envelope{
			MessageId: messageID, MessageType: eventType, PartitionKey: "EXEC-1",
			Payload: []byte(`{"flowId":"FLOW-1"}`),
		},
	}))
	if published.GetReceipt().GetMessageId() != messageID || published.GetReceipt().GetDuplicate() {
		t.Errorf("receipt = %v, want a first publish of %s", published.GetReceipt(), messageID)
	}

	delivery := next(t, recv).GetDelivery()
	if delivery.GetMessage().GetMessageId() != messageID || delivery.GetAttempt() != 1 ||
		string(delivery.GetMessage().GetPayload()) != `{"flowId":"FLOW-1"}` {
		t.Fatalf("delivery = %v, want the published event, attempt 1", delivery)
	}
	must[messagingv1.AckResponse](t, "Ack")(s.ack(ctx, &messagingv1.AckRequest{DeliveryId: delivery.GetDeliveryId()}))
	// Settled: the same delivery id is no longer in flight.
	_, err = s.ack(ctx, &messagingv1.AckRequest{DeliveryId: delivery.GetDeliveryId()})
	expectError(t, s, err, codes.NotFound, "")
}

func telemetry(t *testing.T, s stack) {
	ctx := context.Background()
	recorded := must[telemetryv1.RecordMetricsResponse](t, "RecordMetrics")(s.recordMetrics(ctx, &telemetryv1.RecordMetricsRequest{
		Points: []*telemetryv1.MetricPoint{{
			Name: "go.interop.calls", Kind: telemetryv1.MetricKind_METRIC_KIND_COUNTER, Value: 1,
			Attributes: map[string]string{"client": s.name},
		}},
	}))
	if recorded.GetRecordedCount() != 1 {
		t.Errorf("recorded %d points, want 1", recorded.GetRecordedCount())
	}
	health := must[telemetryv1.GetHealthResponse](t, "GetHealth")(s.getHealth(ctx, &telemetryv1.GetHealthRequest{}))
	if health.GetStatus() != telemetryv1.ServingStatus_SERVING_STATUS_SERVING || len(health.GetComponents()) == 0 {
		t.Errorf("GetHealth = %v, want SERVING with components", health)
	}

	recv, err := s.watchHealth(streamContext(t), &telemetryv1.WatchHealthRequest{})
	if err != nil {
		t.Fatalf("WatchHealth: %v", err)
	}
	snapshot := next(t, recv)
	if snapshot.GetType() != telemetryv1.WatchHealthResponse_TYPE_SNAPSHOT ||
		snapshot.GetStatus() != telemetryv1.ServingStatus_SERVING_STATUS_SERVING ||
		len(snapshot.GetComponents()) != len(health.GetComponents()) {
		t.Errorf("first WatchHealth item = %v, want a SERVING snapshot of every component", snapshot)
	}
}

// expectError checks a failed call's status code and, when flowCode is set,
// the FlowOrchestrator ErrorDetail it carries.
func expectError(t *testing.T, s stack, err error, code codes.Code, flowCode string) []proto.Message {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %v", code)
	}
	got, details := s.status(err)
	if got != code {
		t.Fatalf("code = %v (%v), want %v", got, err, code)
	}
	if flowCode == "" {
		return details
	}
	for _, d := range details {
		if fo, ok := d.(*commonv1.ErrorDetail); ok {
			if fo.GetCode() != flowCode {
				t.Errorf("ErrorDetail.code = %q, want %q", fo.GetCode(), flowCode)
			}
			if fo.GetSeverity() == commonv1.ErrorSeverity_ERROR_SEVERITY_UNSPECIFIED {
				t.Errorf("ErrorDetail.severity is unset: %v", fo)
			}
			return details
		}
	}
	t.Fatalf("no floworchestrator.common.v1.ErrorDetail among %v", details)
	return nil
}

func errorDetails(t *testing.T, s stack) {
	ctx := context.Background()
	_, err := s.getEntity(ctx, &datastorev1.GetEntityRequest{Kind: "flow", Id: s.id("go-missing")})
	expectError(t, s, err, codes.NotFound, "RESOURCE_ERROR.NOT_FOUND")

	_, err = s.read(ctx, &memoryv1.ReadRequest{Address: &memoryv1.AddressRef{Kind: &memoryv1.AddressRef_Text{Text: "not-an-address"}}})
	details := expectError(t, s, err, codes.InvalidArgument, "DATA_ERROR.INVALID_ARGUMENT")
	var fields []string
	for _, d := range details {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if len(fields) == 0 || !strings.HasPrefix(fields[0], "address") {
		t.Errorf("BadRequest fields = %v, want the address named (details: %v)", fields, details)
	}
}

// The standard health service, as Kubernetes' gRPC probes call it.
func TestGRPCHealth(t *testing.T) {
	u, err := url.Parse(meshURL(t))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := grpc_health_v1.NewHealthClient(conn)
	for _, service := range []string{"", "floworchestrator.datastore.v1.DataStoreService"} {
		res, err := health.Check(context.Background(), &grpc_health_v1.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		if res.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", service, res.GetStatus())
		}
	}
}
