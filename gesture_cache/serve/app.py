"""`gesture-cache serve`: one web page that recognises gestures from the webcam, live, and in
a video file dropped on it. Starlette and uvicorn (`pip install 'gesture_cache[serve]'`); a
bundle needs no TensorFlow.

    GET  /         the page (static/index.html, app.js, style.css: no build step, nothing
                   fetched from elsewhere)
    GET  /info     the run: its classes, backbone and background class
    WS   /live     JPEG or PNG frames in (binary messages), one JSON state out a frame
                   (`session.LiveSession.state`); {"type": "error"} for a bad frame, and the
                   session goes on. The Origin must be the page's own.
    POST /detect   a video file's bytes (?name=clip.mp4): its events, as `detect` writes them
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from gesture_cache.common.errors import GestureCacheError
from gesture_cache.deploy.settings import DetectSettings
from gesture_cache.deploy.trained import load_trained
from gesture_cache.detect.detector import detect_offline, detector_of
from gesture_cache.serve.session import LiveSession, decode_frame

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 2 * 1024**3
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v", ".mpg", ".mpeg"}


def same_origin(websocket: WebSocket) -> bool:
    """A browser says which page opened the socket; only ours may (a page elsewhere could
    otherwise stream this machine's camera results, or drive its detector)."""
    origin, host = websocket.headers.get("origin"), websocket.headers.get("host")
    return bool(origin and host) and urlsplit(origin).netloc == host


def make_app(run: str | Path, settings: DetectSettings, **loading) -> Starlette:
    """The app for one trained run or bundle (checked here: a run that cannot detect, or
    whose backbone cannot be built, is refused before anything is served). `loading`: what
    `load_trained` takes besides the run (weights, random_weights, files, runtime)."""
    trained = load_trained(run, **loading)
    detector = detector_of(trained, run)
    info = {
        "run": Path(run).name,
        "classes": detector.classes,
        "background": detector.background,
        "backbone": trained.extractor.spec["model"] if trained.extractor else None,
        "clip_len": detector.clip_len,
    }

    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def describe(request: Request) -> JSONResponse:
        return JSONResponse(info)

    async def live(websocket: WebSocket) -> None:
        if not same_origin(websocket):
            log.warning("a WebSocket from origin %r refused", websocket.headers.get("origin"))
            await websocket.close(code=1008)
            return
        await websocket.accept()
        loop, outgoing = asyncio.get_running_loop(), asyncio.Queue()

        def send(message: dict) -> None:  # from the session's thread
            loop.call_soon_threadsafe(outgoing.put_nowait, message)

        async def forward() -> None:
            while True:
                await websocket.send_json(await outgoing.get())

        try:
            session = await run_in_threadpool(LiveSession, run, settings, send, loading)
        except GestureCacheError as error:
            await websocket.send_json({"type": "error", "error": str(error)})
            await websocket.close()
            return
        sender = asyncio.create_task(forward())
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    await outgoing.put({"type": "error", "error": "send frames as binary messages"})
                    continue
                try:
                    session.offer(decode_frame(data))
                except GestureCacheError as error:
                    await outgoing.put({"type": "error", "error": str(error)})
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            await run_in_threadpool(session.close)  # its thread ends and its state is freed

    async def detect_file(request: Request) -> JSONResponse:
        name = Path(request.query_params.get("name", "upload.mp4")).name
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            return JSONResponse({"error": f"{name}: not a video file name"}, status_code=400)
        with tempfile.TemporaryDirectory(prefix="gesture-cache-serve-") as folder:
            path = Path(folder) / f"upload{suffix}"
            size = 0
            with path.open("wb") as file:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        return JSONResponse(
                            {"error": f"{name}: over {MAX_UPLOAD_BYTES} bytes"}, status_code=413
                        )
                    file.write(chunk)
            try:
                detection = await run_in_threadpool(
                    detect_upload, run, str(path), settings, loading
                )
            except GestureCacheError as error:
                return JSONResponse({"error": f"{name}: {error}"}, status_code=400)
        rows = [{**event.row(), "recording": name} for event in detection.events]
        return JSONResponse(
            {"recording": name, "frames": detection.n_frames, "fps": detection.fps, "events": rows}
        )

    return Starlette(
        routes=[
            Route("/", page),
            Route("/info", describe),
            Route("/detect", detect_file, methods=["POST"]),
            WebSocketRoute("/live", live),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )


def detect_upload(run: str | Path, path: str, settings: DetectSettings, loading: dict):
    """Offline detection of one uploaded file, with a run of its own (the live sessions'
    backbones keep their tracking state)."""
    trained = load_trained(run, **loading)
    return detect_offline(detector_of(trained, run), trained.extractor, path, settings)


def serve(
    run: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: DetectSettings | None = None,
    **loading,
) -> None:
    """Serve the page until Ctrl-C."""
    import uvicorn

    app = make_app(run, settings or DetectSettings(), **loading)
    where = (
        "this machine only; --host 0.0.0.0 serves the network"
        if host == "127.0.0.1"
        else ("reachable by others: the page opens their camera only on their own click")
    )
    print(f"serving {run} on http://{host}:{port} ({where}); Ctrl-C stops it", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=8 * 1024 * 1024)
