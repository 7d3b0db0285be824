"""ragtune's MCP servers and the training worker, installed as ragtune.servers."""
