"""``bertfit serve``: the HTTP server (FastAPI under uvicorn) with dynamic batching and a web page."""
