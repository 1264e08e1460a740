"""What schemathesis cannot know from the OpenAPI document: how to make a Parquet file of payments.

The document names the media type of ``/score_file``'s upload (``encoding``); a JSON schema cannot
describe a Parquet file, so the fuzz test registers one here (``SCHEMATHESIS_HOOKS``): small files with
the payment columns, typed as a source system writes them, values anywhere in their types' ranges.
Negative cases (no file, a text field, unknown fields) schemathesis still makes from the document.
"""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import schemathesis
from hypothesis import strategies as st

PARQUET = "application/vnd.apache.parquet"


@st.composite
def payments_files(draw) -> bytes:
    rows = draw(st.integers(1, 30))

    def column(values):
        return draw(st.lists(values, min_size=rows, max_size=rows))

    ids = st.integers(-(2**63), 2**63 - 1)  # negative ids too: such a row gets an error, the file a 200
    table = pa.table(
        {
            "transaction_id": pa.array(column(ids), pa.int64()),
            "transacted_at": pa.array(column(st.datetimes()), pa.timestamp("us")),
            "customer_id": pa.array(column(ids), pa.int64()),
            "terminal_id": pa.array(column(ids), pa.int64()),
            "amount": pa.array(column(st.floats(allow_nan=True, allow_infinity=True)), pa.float64()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


schemathesis.openapi.media_type(PARQUET, payments_files())
