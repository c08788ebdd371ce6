"""Blocks: one Kafka record carries N ≥ 1 queries (or a participant's answers to the rows of
some query blocks, or their results) as a small prefix, a JSON header and aligned raw
little-endian buffers. Query ids are derived (`query_id(block_id, row)`), never listed.
docs/wire-format.md is the contract; this package is one implementation of it."""

from schemas.blocks.codec import (
    QueryBlock,
    ResponseBlock,
    decode_query_block,
    decode_response_block,
    encode_query_block,
    encode_response_block,
    query_block,
)
from schemas.blocks.frame import CONTENT_TYPE, MAGIC, SIGNATURE_SIZE, block_headers, block_kind
from schemas.blocks.headers import (
    ALIGN,
    ALL_BLOCK_HEADERS,
    DECLINE_CODES,
    DECLINED_BASE,
    EXCLUDED_BASE,
    EXCLUSION_CODES,
    MAX_BLOCK,
    RESULT_CODES,
    ROLE_CODES,
    BlockHeader,
    QueryBlockHeader,
    ResponseBlockHeader,
    ResultBlockHeader,
    Span,
    TensorRef,
    query_id,
    split_query_id,
)
from schemas.blocks.result import ResultBlock, decode_result_block, encode_result_block

__all__ = [
    "ALIGN",
    "ALL_BLOCK_HEADERS",
    "CONTENT_TYPE",
    "DECLINED_BASE",
    "DECLINE_CODES",
    "EXCLUDED_BASE",
    "EXCLUSION_CODES",
    "MAGIC",
    "MAX_BLOCK",
    "RESULT_CODES",
    "ROLE_CODES",
    "SIGNATURE_SIZE",
    "BlockHeader",
    "QueryBlock",
    "QueryBlockHeader",
    "ResponseBlock",
    "ResponseBlockHeader",
    "ResultBlock",
    "ResultBlockHeader",
    "Span",
    "TensorRef",
    "block_headers",
    "block_kind",
    "decode_query_block",
    "decode_response_block",
    "decode_result_block",
    "encode_query_block",
    "encode_response_block",
    "encode_result_block",
    "query_block",
    "query_id",
    "split_query_id",
]
