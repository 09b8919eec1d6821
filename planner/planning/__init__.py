"""Pure planning core: profiles, plans, the cost model, the simulator and the strategies.

Everything here is a function of files and in-memory objects; nothing opens a socket.
"""
