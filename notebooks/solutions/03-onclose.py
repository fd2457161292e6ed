# Exercise: what should the page do after each close? Write it in JavaScript.
# Reference solution: load it into the exercise cell with %load solutions/03-onclose.py
DECIDE = """
// The codes after which the table says "stop": the server refused on purpose, and will again.
const REFUSALS = [1002, 1003, 1007, 1008, 1009, 1010, 1015];
// The planned goodbyes: the server is going away or restarting, and is back in a moment.
const GOODBYES = [1001, 1012];

function decide(event) {
  const code = event.code;
  if (REFUSALS.includes(code) || (code >= 3000 && code <= 4999)) {
    return "stop";
  }
  if (GOODBYES.includes(code) && event.wasClean) {
    return "retry";
  }
  // Everything else is a failure (1006 with wasClean false, 1011, 1013, 1014), or a close
  // without a reason to hurry back (1000, 1005): reconnect, waiting longer each time.
  return "back off";
}
"""
