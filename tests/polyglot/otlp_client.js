// A Node.js application instrumented with the OpenTelemetry SDK, exporting its LLM spans to
// feedbackloop over OTLP/gRPC, then giving feedback by span id and reading the session back.
//
//   node otlp_client.js 127.0.0.1:50051 [conversation-id]
//
// Two fake model calls in one conversation: one recorded with the GenAI semantic conventions
// (JSON message attributes), one with OpenInference's flattened attributes. Prints one JSON
// object on stdout that tests/integration/test_polyglot_otlp.py asserts on. Send an API key
// with FEEDBACKLOOP_API_KEY=<key>. Exits non-zero on any error.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { SpanKind } = require("@opentelemetry/api");
const { NodeTracerProvider, BatchSpanProcessor } = require("@opentelemetry/sdk-trace-node");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-grpc");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");

function ingestionService() {
  const definition = protoLoader.loadSync("feedbackloop/v1/ingestion.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).feedbackloop.v1.IngestionService;
}

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// The fake model call an instrumentation would wrap; returns the answer and the span's ids.
function chatGenAI(tracer, conversation, question) {
  const span = tracer.startSpan("chat gpt-4o", { kind: SpanKind.CLIENT });
  const answer = `Node says: ${question} -> 42`;
  span.setAttributes({
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.conversation.id": conversation,
    "gen_ai.input.messages": JSON.stringify([{ role: "user", parts: [{ type: "text", content: question }] }]),
    "gen_ai.output.messages": JSON.stringify([
      { role: "assistant", parts: [{ type: "text", content: answer }], finish_reason: "stop" },
    ]),
    "gen_ai.usage.input_tokens": 5,
    "gen_ai.usage.output_tokens": 7,
  });
  span.end();
  return { answer, ids: span.spanContext() };
}

function chatOpenInference(tracer, conversation, question) {
  const span = tracer.startSpan("ChatCompletion");
  const answer = `OpenInference says: ${question} -> 43`;
  span.setAttributes({
    "openinference.span.kind": "LLM",
    "llm.model_name": "claude-3-5-sonnet",
    "session.id": conversation,
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.0.message.content": question,
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": answer,
  });
  span.end();
  return { answer, ids: span.spanContext() };
}

async function main() {
  const [address, conversation = "node-conversation"] = process.argv.slice(2);
  if (!address) {
    throw new Error("usage: node otlp_client.js HOST:PORT [CONVERSATION_ID]");
  }
  const metadata = new grpc.Metadata();
  if (process.env.FEEDBACKLOOP_API_KEY) {
    metadata.set("authorization", `Bearer ${process.env.FEEDBACKLOOP_API_KEY}`);
  }
  // What an application configures: the endpoint and the authorization header.
  const exporter = new OTLPTraceExporter({ url: `http://${address}`, metadata });
  const provider = new NodeTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] });
  const tracer = provider.getTracer("node-fake-llm");
  const first = chatGenAI(tracer, conversation, "What is the Pro plan?");
  const second = chatOpenInference(tracer, conversation, "And the team plan?");
  await provider.forceFlush();
  await provider.shutdown();

  const IngestionService = ingestionService();
  const client = new IngestionService(address, grpc.credentials.createInsecure());
  try {
    const submitted = await call(
      client,
      "SubmitFeedback",
      {
        feedback: {
          span: { trace_id: second.ids.traceId, span_id: second.ids.spanId },
          thumb: "THUMB_DOWN",
          comment: "the team plan price is wrong",
          idempotency_key: `node-otlp-${conversation}`,
        },
      },
      metadata,
    );
    const session = await call(client, "GetSession", { session_id: conversation }, metadata);
    process.stdout.write(
      JSON.stringify({
        spans: [first.ids, second.ids].map((ids) => ({ trace_id: ids.traceId, span_id: ids.spanId })),
        answers: [first.answer, second.answer],
        feedback_id: submitted.feedback_id,
        feedback_created: submitted.created,
        turns: session.turns.map((turn) => ({
          turn_index: turn.interaction.turn_index,
          response: turn.interaction.response,
          model: turn.interaction.model.name,
          trace_id: turn.interaction.trace_id,
          span_id: turn.interaction.span_id,
          feedback: turn.feedback.map((f) => ({ id: f.id, span_link: f.span_link, comment: f.comment })),
        })),
      }) + "\n",
    );
  } finally {
    client.close();
  }
}

main().catch((error) => {
  process.stderr.write(`error: ${error.code !== undefined ? `${grpc.status[error.code]}: ${error.details}` : error.stack || error}\n`);
  process.exit(1);
});
