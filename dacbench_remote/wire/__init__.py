"""What both sides of the container boundary share: the exact codec, the data channel's frames,
DACBench's value types, benchmark descriptions and error replies. Runs inside images too: it
imports only numpy (gymnasium when a gymnasium value crosses) beyond the standard library."""
