"""HTTP/1.1 reverse proxy with MCP (JSON-RPC) awareness: sans-IO codecs and the asyncio glue."""
