"""Online scoring service: `make serve` (FastAPI on uvicorn); see app.py. Not imported by the code location."""
