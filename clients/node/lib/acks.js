// acks.js: stored pushes handed to the application once (PROTOCOL.md §4, "Stored delivery").
// A push of a storing type carries a durable id in `header.msg` and comes again (at least once)
// until it is acknowledged with `bester.ack`. Seen is the client's bookkeeping for that: the ids
// already handed to the application (a bounded set, oldest forgotten first, kept for the
// client's life so that it outlasts reconnections) and the ids whose `bester.ack` is owed. No
// I/O here: the client sends the acks.

/** How many ids the client remembers by default. */
export const MAX_SEEN = 4096;
/** The most ids one `bester.ack` may carry (the server's limit). */
export const MAX_ACK = 4096;

export class Seen {
  constructor(size = MAX_SEEN) {
    if (!Number.isInteger(size) || size < 1) throw new TypeError('maxSeen: an integer of at least 1');
    this.size = size;
    this.ids = new Map(); // msg -> whether its ack was sent, oldest first
    /** Ids to acknowledge with the next `bester.ack`, in order. */
    this.owed = [];
  }

  /**
   * What to do with a push whose `header.msg` is `msg`: 'deliver' (the first copy), 'ack' (a
   * copy of one handed over and acknowledged: it is owed again, not delivered) or 'drop' (a
   * copy of one handed over whose ack is still to come).
   */
  arrived(msg) {
    if (msg === undefined) return 'deliver';
    const acked = this.ids.get(msg);
    if (acked === undefined) {
      this.ids.set(msg, false);
      if (this.ids.size > this.size) this.ids.delete(this.ids.keys().next().value);
      return 'deliver';
    }
    if (acked) {
      this.owed.push(msg);
      return 'ack';
    }
    return 'drop';
  }

  /** `msg` was not handed over after all (dropped from a full buffer): a later copy is. */
  forget(msg) {
    if (msg !== undefined) this.ids.delete(msg);
  }

  /** The application has taken `msg`: acknowledge it with the next `bester.ack`. */
  owe(msg) {
    if (msg !== undefined) this.owed.push(msg);
  }

  /** The ids for one `bester.ack` (at most MAX_ACK), now counted as acknowledged. */
  take() {
    const batch = this.owed.splice(0, MAX_ACK);
    this.acked(batch);
    return batch;
  }

  /** A `bester.ack` for `msgs` is on its way: a later copy is acknowledged again. */
  acked(msgs) {
    for (const msg of msgs) if (this.ids.has(msg)) this.ids.set(msg, true);
  }
}
