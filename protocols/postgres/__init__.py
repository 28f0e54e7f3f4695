"""PostgreSQL frontend/backend protocol 3.0: sans-IO codec and asyncio proxy session."""
