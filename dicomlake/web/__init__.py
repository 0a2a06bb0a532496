"""The DICOMweb service: an ASGI app (Starlette) over the core library; `dicomlake serve` runs it."""
