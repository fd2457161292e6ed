"""Studies: the experiments the notebooks run (removal, latency, herds), the model, and the plots.

Each study starts what it needs in a private lab, measures real sockets, and
returns data; a notebook cell turns it into a table or a plot.
"""
