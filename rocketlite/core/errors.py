"""Domain errors. Front-ends map them onto their protocol's codes (remoting response codes,
gRPC ``Code`` values, MQTT reason codes)."""


class BrokerError(Exception):
    """Base of every error the core raises on purpose."""

    code = "INTERNAL"


class TopicNotFound(BrokerError):
    code = "TOPIC_NOT_FOUND"


class GroupNotFound(BrokerError):
    code = "GROUP_NOT_FOUND"


class BadRequest(BrokerError):
    code = "BAD_REQUEST"


class MessageTooLarge(BadRequest):
    code = "MESSAGE_TOO_LARGE"


class NotFound(BrokerError):
    code = "NOT_FOUND"


class InvalidReceipt(BrokerError):
    code = "INVALID_RECEIPT_HANDLE"


class StorageFull(BrokerError):
    code = "STORAGE_FULL"


class Forbidden(BrokerError):
    code = "FORBIDDEN"
