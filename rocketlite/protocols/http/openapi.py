"""The OpenAPI 3 description of the admin API served at /api/openapi.json (kept beside app.py)."""

from __future__ import annotations

from typing import Any

from rocketlite import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


ERR = {"$ref": "#/components/responses/Error"}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
MSG_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "the message's unique id (UNIQ_KEY / gRPC message id)"}


def _q(name: str, typ: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": typ}, "description": description}


def openapi_document() -> dict[str, Any]:
    int_ = {"type": "integer"}
    str_ = {"type": "string"}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": str_, "code": str_, "path": str_, "supported": {"type": "boolean"},
            "allow": {"type": "array", "items": str_}}},
        "Queue": {"type": "object", "properties": {"queue_id": int_, "min_offset": int_, "max_offset": int_}},
        "Topic": {"type": "object", "required": ["name"], "properties": {
            "name": str_, "read_queues": int_, "write_queues": int_,
            "perm": {"type": "integer", "description": "RocketMQ PermName bits: 4 read, 2 write"},
            "message_type": {"type": "string", "enum": ["NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED"]},
            "order": {"type": "boolean"}, "system": {"type": "boolean"},
            "attributes": {"type": "object", "additionalProperties": str_},
            "messages": {"type": "integer", "description": "messages stored now"},
            "appended": {"type": "integer", "description": "messages ever appended (sum of max offsets)"},
            "queues": {"type": "array", "items": _ref("Queue")},
            "groups": {"type": "array", "items": str_}}},
        "TopicSpec": {"type": "object", "properties": {
            "name": str_, "queues": int_, "read_queues": int_, "write_queues": int_, "perm": int_,
            "message_type": str_, "order": {"type": "boolean"},
            "attributes": {"type": "object", "additionalProperties": str_}}},
        "GroupSummary": {"type": "object", "properties": {
            "name": str_, "declared": {"type": "boolean"}, "clients": int_,
            "topics": {"type": "array", "items": str_}, "lag": int_}},
        "QueueProgress": {"type": "object", "properties": {
            "queue_id": int_, "broker_offset": int_, "min_offset": int_,
            "consumer_offset": {"type": "integer", "nullable": True}, "lag": int_}},
        "TopicProgress": {"type": "object", "properties": {
            "topic": str_, "lag": int_, "queues": {"type": "array", "items": _ref("QueueProgress")},
            "pop_inflight": {"type": "integer", "description": "POP/simple consumers: handed out, not acked"}}},
        "Client": {"type": "object", "properties": {
            "client_id": str_, "group": str_, "role": str_, "protocol": str_, "consume_type": str_,
            "message_model": str_, "orderly": {"type": "boolean"}, "last_seen_ms": int_,
            "subscriptions": {"type": "object", "additionalProperties": str_}}},
        "Group": {"type": "object", "properties": {
            "name": str_, "config": {"type": "object", "nullable": True},
            "clients": {"type": "array", "items": _ref("Client")}, "lag": int_,
            "topics": {"type": "array", "items": _ref("TopicProgress")}}},
        "OffsetReset": {"type": "object", "description": "exactly one of offset, timestamp_ms, to", "properties": {
            "topic": {"type": "string", "description": "default: every topic the group consumes"},
            "queue_id": {"type": "integer", "description": "default: every queue"},
            "offset": int_, "timestamp_ms": {"type": "integer", "description": "first message stored at or after"},
            "to": {"type": "string", "enum": ["earliest", "latest"]}}},
        "OffsetResetResult": {"type": "object", "properties": {"group": str_, "queues": {"type": "array", "items": {
            "type": "object", "properties": {"topic": str_, "queue_id": int_,
                                             "old_offset": {"type": "integer", "nullable": True},
                                             "new_offset": int_}}}}},
        "Delivery": {"type": "object", "properties": {
            "group": str_, "state": {"type": "string", "enum": ["CONSUMED", "NOT_CONSUMED_YET"]},
            "consumer_offset": {"type": "integer", "nullable": True}}},
        "Message": {"type": "object", "properties": {
            "unique_id": str_, "topic": str_, "queue_id": int_, "queue_offset": int_, "commit_offset": int_,
            "tags": str_, "keys": str_, "properties": {"type": "object", "additionalProperties": str_},
            "flag": int_, "sys_flag": int_, "born_timestamp": int_, "born_host": str_, "store_timestamp": int_,
            "reconsume_times": int_, "body_size": int_,
            "body_text": {"type": "string", "nullable": True, "description": "UTF-8 body (preview unless body=full)"},
            "body_base64": {"type": "string", "description": "present when the body is not UTF-8, or body=full"},
            "body_truncated": {"type": "boolean"},
            "delivery": {"type": "array", "items": _ref("Delivery")}}},
        "SendRequest": {"type": "object", "required": ["topic"], "properties": {
            "topic": str_, "body": str_, "body_base64": str_, "tags": str_, "keys": str_,
            "properties": {"type": "object", "additionalProperties": str_}}},
        "SendResult": {"type": "object", "properties": {
            "unique_id": str_, "topic": str_, "queue_id": int_, "queue_offset": int_}},
        "Cluster": {"type": "object", "properties": {
            "version": str_, "broker_name": str_, "cluster_name": str_,
            "addresses": {"type": "object", "additionalProperties": str_}, "ready": {"type": "boolean"},
            "uptime_seconds": {"type": "number"}, "now_ms": int_, "data_dir": {"type": "string", "nullable": True},
            "store": {"type": "object", "additionalProperties": {"type": "number"}},
            "topics": int_, "groups": int_, "auto_create_topics": {"type": "boolean"},
            "features": {"type": "object", "additionalProperties": {"type": "boolean"}}}},
        "Mqtt": {"type": "object", "properties": {
            "available": {"type": "boolean"},
            "clients": {"type": "array", "items": {}}, "sessions": {"type": "array", "items": {}},
            "retained": {"type": "array", "items": {}}}},
    }
    paths: dict[str, Any] = {
        "/api/cluster": {"get": {"operationId": "getCluster", "summary": "Broker identity, listeners, store stats",
                                 "responses": {"200": _json(_ref("Cluster")), "401": ERR}}},
        "/api/topics": {
            "get": {"operationId": "listTopics", "summary": "List topics",
                    "parameters": [_q("system", "boolean", "include system topics (%RETRY%, rmq_sys_...)")],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "topics": {"type": "array", "items": _ref("Topic")}}}), "401": ERR}},
            "post": {"operationId": "createTopic", "summary": "Create a topic (or update it when it exists)",
                     "requestBody": _body(_ref("TopicSpec")),
                     "responses": {"201": _json(_ref("Topic"), "Created"), "200": _json(_ref("Topic"), "Updated"),
                                   "400": ERR, "401": ERR}},
        },
        "/api/topics/{name}": {
            "parameters": [NAME],
            "get": {"operationId": "getTopic", "summary": "A topic with per-queue offsets and consuming groups",
                    "responses": {"200": _json(_ref("Topic")), "404": ERR, "401": ERR}},
            "put": {"operationId": "updateTopic", "summary": "Change queue counts, permission or type",
                    "requestBody": _body(_ref("TopicSpec")),
                    "responses": {"200": _json(_ref("Topic")), "400": ERR, "404": ERR, "401": ERR}},
            "patch": {"operationId": "patchTopic", "summary": "Same as PUT",
                      "requestBody": _body(_ref("TopicSpec")),
                      "responses": {"200": _json(_ref("Topic")), "400": ERR, "404": ERR, "401": ERR}},
            "delete": {"operationId": "deleteTopic", "summary": "Delete a topic's metadata",
                       "responses": {"200": _json({"type": "object"}), "404": ERR, "401": ERR}},
        },
        "/api/topics/{name}/purge": {
            "parameters": [NAME],
            "post": {"operationId": "purgeTopic",
                     "summary": "Purge a topic's messages: every queue's minimum offset moves to its maximum",
                     "responses": {"200": _json({"type": "object", "properties": {
                         "purged": {"type": "string"}, "queues": {"type": "integer"},
                         "messages": {"type": "integer"}}}), "404": ERR, "401": ERR}},
        },
        "/api/groups": {"get": {"operationId": "listGroups", "summary": "Consumer groups with total lag",
                                "responses": {"200": _json({"type": "object", "properties": {
                                    "groups": {"type": "array", "items": _ref("GroupSummary")}}}), "401": ERR}}},
        "/api/groups/{name}": {
            "parameters": [NAME],
            "get": {"operationId": "getGroup", "summary": "Clients and per-queue offsets and lag",
                    "responses": {"200": _json(_ref("Group")), "404": ERR, "401": ERR}},
            "delete": {"operationId": "deleteGroup", "summary": "Delete a group and its offsets",
                       "responses": {"200": _json({"type": "object"}), "404": ERR, "401": ERR}},
        },
        "/api/groups/{name}/offsets": {
            "parameters": [NAME],
            "post": {"operationId": "resetOffsets", "summary": "Reset a group's offsets by offset, time or to an end (running consumers follow)",
                     "requestBody": _body(_ref("OffsetReset")),
                     "responses": {"200": _json(_ref("OffsetResetResult")), "400": ERR, "404": ERR, "401": ERR}},
        },
        "/api/clients": {"get": {"operationId": "listClients", "summary": "Registered consumers and producers",
                                 "responses": {"200": _json({"type": "object", "properties": {
                                     "consumers": {"type": "array", "items": _ref("Client")},
                                     "producers": {"type": "array", "items": _ref("Client")}}}), "401": ERR}}},
        "/api/messages": {
            "get": {"operationId": "findMessages",
                    "summary": "Find messages by id, by key, by queue offset, or the newest of a topic",
                    "parameters": [_q("id", "string", "unique message id"), _q("key", "string", "message key"),
                                   _q("topic", "string", "topic (filter for key; required for offsets)"),
                                   _q("queue_id", "integer", "queue to read"),
                                   _q("offset", "integer", "first queue offset to read"),
                                   _q("count", "integer", "at most this many (1..256, default 32)")],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "messages": {"type": "array", "items": _ref("Message")}}}), "400": ERR, "404": ERR,
                        "401": ERR}},
            "post": {"operationId": "sendMessage", "summary": "Send one message (quick checks from the console)",
                     "requestBody": _body(_ref("SendRequest")),
                     "responses": {"201": _json(_ref("SendResult"), "Stored"), "400": ERR, "401": ERR}},
        },
        "/api/messages/{id}": {
            "parameters": [MSG_ID],
            "get": {"operationId": "getMessage", "summary": "One message with body, properties and delivery state",
                    "parameters": [_q("body", "string", "'full' for the whole body in body_base64")],
                    "responses": {"200": _json(_ref("Message")), "404": ERR, "401": ERR}},
        },
        "/api/messages/{id}/resend": {
            "parameters": [MSG_ID],
            "post": {"operationId": "resendMessage", "summary": "Deliver a message again to one consumer group",
                     "requestBody": _body({"type": "object", "required": ["group"], "properties": {"group": str_}}),
                     "responses": {"200": _json({"type": "object", "properties": {
                         "resent": str_, "group": str_, "method": str_,
                         "new_id": {"type": "string", "nullable": True}}}), "400": ERR, "404": ERR, "401": ERR}},
        },
        "/api/mqtt": {"get": {"operationId": "getMqtt", "summary": "MQTT clients, sessions and retained messages",
                              "responses": {"200": _json(_ref("Mqtt")), "401": ERR}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus text format", "security": [],
                             "responses": {"200": {"description": "metrics",
                                                   "content": {"text/plain": {"schema": str_}}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "rocketlite admin API", "version": __version__,
                 "description": "Operate a rocketlite broker: topics, groups, offsets, messages, metrics."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": _json(_ref("Error"), "Error")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "only when http.admin_token is set"}},
        },
    }
