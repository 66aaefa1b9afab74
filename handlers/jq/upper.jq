# upper.jq: a handler in jq, run by `bester handle` in line mode:
#
#   [handlers.upper]
#   command = ["bester", "handle", "upper", "--", "jq", "-c", "--unbuffered", "-f", "{examples}/upper.jq"]
#
# jq reads one request per line and writes one reply's data per line (-c: one line each;
# --unbuffered: at once, not when its buffer fills). {"text":"hi"} is answered {"text":"HI"}.
# A line filter must write exactly one line per request, so an input it cannot take is answered
# too (with `try`): a filter that skips one would answer each later request with the one before's.
try (.payload.data | .text |= ascii_upcase) catch {"error": "data.text must be a string"}
