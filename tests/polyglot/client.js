// A Node.js client for IngestionService, loading the .proto at run time (no generated code).
//
//   node client.js 127.0.0.1:50051 [session-id]
//
// Records one interaction, submits thumbs-down feedback on it, reads it back, and prints one
// JSON object on stdout that tests/integration/test_polyglot.py asserts on. Send an API key with
// FEEDBACKLOOP_API_KEY=<key>. Exits non-zero (with the gRPC status on stderr) on any error.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");

function loadService() {
  const definition = protoLoader.loadSync("feedbackloop/v1/ingestion.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names exactly as in the .proto: interaction_id, not interactionId
    longs: String,
    enums: String, // enum values by name: "THUMB_DOWN"
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

async function main() {
  const [address, sessionId = "node-session"] = process.argv.slice(2);
  if (!address) {
    throw new Error("usage: node client.js HOST:PORT [SESSION_ID]");
  }
  const IngestionService = loadService();
  const client = new IngestionService(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (process.env.FEEDBACKLOOP_API_KEY) {
    metadata.set("authorization", `Bearer ${process.env.FEEDBACKLOOP_API_KEY}`);
  }
  try {
    const recorded = await call(
      client,
      "RecordInteraction",
      {
        interaction: {
          session_id: sessionId,
          turn_index: 0,
          user: { id: "node-user", role: "customer" },
          // google.protobuf.Struct comes from protobufjs' bundled well-known types, whose field
          // names are camelCase whatever keepCase says: numberValue, not number_value.
          model: { name: "gpt-4o", version: "2024-08-06", parameters: { fields: { temperature: { numberValue: 0.3 } } } },
          input_messages: [{ role: "user", content: "How much is the plan?" }],
          response: "Our plan costs $10.",
          attributes: { client: "node" },
        },
      },
      metadata,
    );
    const submitted = await call(
      client,
      "SubmitFeedback",
      {
        feedback: {
          interaction_id: recorded.interaction_id,
          thumb: "THUMB_DOWN",
          rating: 2,
          categories: ["outdated_info"],
          correction: "It costs $12 since March.",
          idempotency_key: `node-${sessionId}`,
        },
      },
      metadata,
    );
    const got = await call(client, "GetFeedback", { feedback_id: submitted.feedback_id }, metadata);
    process.stdout.write(
      JSON.stringify({
        interaction_id: recorded.interaction_id,
        interaction_created: recorded.created,
        feedback_id: submitted.feedback_id,
        feedback_created: submitted.created,
        trace_id: submitted.trace_id,
        read_back: {
          session_id: got.feedback.session_id,
          interaction_id: got.feedback.interaction_id,
          thumb: got.feedback.thumb,
          rating: got.feedback.rating,
          categories: got.feedback.categories,
          correction: got.feedback.correction,
          source: got.feedback.source,
          interaction_response: got.interaction.response,
          model_temperature: got.interaction.model.parameters.fields.temperature.numberValue,
        },
      }) + "\n",
    );
  } finally {
    client.close();
  }
}

main().catch((error) => {
  process.stderr.write(`error: ${error.code !== undefined ? `${grpc.status[error.code]}: ${error.details}` : error}\n`);
  process.exit(1);
});
