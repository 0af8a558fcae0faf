"""`finetune serve`: a trained model behind HTTP (FastAPI on uvicorn) for a team's services to call.

    POST /predict  {"rows": [{"text": "great flight"}, ...]}  ->  {"predictions": [...], "rejects": [...]}
    GET  /health   ->  {"status": "ok", "task": ..., "model": ..., "inputs": {"text": "text"}}

Rows name the trained model's own input columns (its data.text_column, data.image_column, data.audio_column; /health lists
them); an image or audio clip is its file's bytes in base64. A request goes through exactly `finetune predict`'s code: its rows are written as a JSON-
lines table (images as files beside it) in a private temporary folder and predicted from there, so every check,
normalisation and rejection is the same; `row` in the answer is the row's 1-based place in the request.
Bound to 127.0.0.1 unless --host says otherwise: nothing authenticates a request, so expose it only behind your own
gateway. A body over --max-request-bytes gets 413 before it is read further; one that is not {"rows": [objects]}, or an
image that is not base64, 400 naming what was expected; rows that cannot be used come back in `rejects` with the reason.
One request predicts at a time (uvicorn queues the others; the CPU threads are the model's). The interactive docs pages
are off: they load their scripts from a CDN, and nothing here reaches the internet.
"""

import argparse
import base64
import binascii
import json
import sys
import tempfile
import threading
from pathlib import Path

from finetune.errors import UserError

INPUT_COLUMNS = {"text_column": "text", "image_column": "image", "audio_column": "audio"}  # data keys the tasks name their inputs by, and the kind
FILES = {"image": "an image", "audio": "an audio clip"}  # the kinds sent as a file's bytes in base64


def input_fields(data) -> dict[str, str]:
    """{request field: "text" | "image" | "audio"}: the trained model's input columns."""
    return {getattr(data, key): kind for key, kind in INPUT_COLUMNS.items() if getattr(data, key, None)}


class BadRequest(ValueError):
    pass


def write_rows(rows, fields: dict[str, str], folder: Path) -> Path:
    """The request's rows as folder/rows.jsonl, each image or audio clip decoded into a file of folder named in its row."""
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise BadRequest('expected a JSON object {"rows": [{...}, ...]} with at least one row, each an object of input fields '
                         f"({', '.join(fields)})")
    lines = []
    for number, row in enumerate(rows, start=1):
        row = dict(row)
        for name, kind in fields.items():
            if kind in FILES and isinstance(row.get(name), str) and row[name]:
                try:
                    content = base64.b64decode(row[name], validate=True)
                except (binascii.Error, ValueError):
                    raise BadRequest(f"row {number}: {name!r} is not base64 ({FILES[kind]} is sent as its file's bytes in base64)") from None
                (folder / f"{number}.{kind}").write_bytes(content)
                row[name] = f"{number}.{kind}"
        lines.append(json.dumps(row, ensure_ascii=False))
    path = folder / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def create_app(predictor, model: str, max_request_bytes: int, batch_size: int | None = None):
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    app = FastAPI(title=f"finetune serve: {model}", docs_url=None, redoc_url=None, openapi_url=None)
    fields = input_fields(predictor.data)
    one_at_a_time = threading.Lock()

    def predict(rows) -> dict:
        with one_at_a_time, tempfile.TemporaryDirectory(prefix="finetune-serve-") as folder:
            result = predictor.predict(write_rows(rows, fields, Path(folder)), batch_size)
            return {"predictions": json.loads(result.table.to_json(orient="records", force_ascii=False)),
                    "rejects": json.loads(result.rejects.to_json(orient="records", force_ascii=False))}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "task": predictor.task.name, "model": model, "inputs": fields}

    @app.post("/predict")
    async def predict_rows(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_request_bytes:
            return JSONResponse({"error": f"request body of {int(declared):,} bytes; at most {max_request_bytes:,} (--max-request-bytes)"}, 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_request_bytes:
                return JSONResponse({"error": f"request body over {max_request_bytes:,} bytes (--max-request-bytes)"}, 413)
        try:
            payload = json.loads(body)
        except ValueError as error:
            return JSONResponse({"error": f"the body is not JSON ({error})"}, 400)
        try:
            return await run_in_threadpool(predict, payload.get("rows") if isinstance(payload, dict) else None)
        except (BadRequest, UserError) as error:
            return JSONResponse({"error": str(error)}, 400)

    return app


def main(argv: list[str] | None = None) -> None:
    name, _, description = __doc__.strip().partition("\n")
    parser = argparse.ArgumentParser(prog="finetune serve", description=name, epilog=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/model", help="a trained model folder (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="the port to listen on (default: %(default)s)")
    parser.add_argument("--max-request-bytes", type=int, default=16 * 2**20, help="larger requests get 413 (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, help="rows per forward pass (default: the model's train.eval_batch_size)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run modelling code shipped in the model folder")
    args = parser.parse_args(argv)
    try:
        from finetune.inference import load

        predictor = load(args.model, args.trust_remote_code)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    import uvicorn

    print(f"serving {args.model} ({predictor.task.name}) on http://{args.host}:{args.port}: POST /predict, GET /health", flush=True)
    uvicorn.run(create_app(predictor, args.model, args.max_request_bytes, args.batch_size), host=args.host, port=args.port,
                log_level="warning")
