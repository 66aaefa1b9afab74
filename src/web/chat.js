// The chat page: log in over WebSocket with bester.js, join a room of the "chat" handler
// (handlers/python/chat.py), show what is said there and who of the room is online, and say
// things. The room is the broker's group "chat:<room>": its members' presence is watched with
// bester.presence.subscribe.
import { BesterClient } from "./bester.js";

const $ = (id) => document.getElementById(id);
const scheme = location.protocol === "https:" ? "wss" : "ws";
const url = `${scheme}://${location.host}/`;
let client = null;
let room = null;
let members = new Map(); // the room's members: user -> "online" | "offline"

function showMembers() {
  const online = [...members].filter(([, s]) => s === "online").map(([u]) => u).sort();
  const away = [...members].filter(([, s]) => s !== "online").map(([u]) => u).sort();
  $("status").textContent = `${client.username} in ${room}: ${online.join(", ")}`
    + (away.length ? ` (offline: ${away.join(", ")})` : "");
}

// A presence push: a member came, went, joined or left the room.
function presence(change) {
  if (change.group !== undefined && change.group !== `chat:${room}`) return;
  if (change.member === false) {
    members.delete(change.user);
  } else if (change.member === true || members.has(change.user)) {
    members.set(change.user, change.state);
  }
  showMembers();
}

function line(text, from, cls) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  if (from) {
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from;
    li.append(who);
  }
  li.append(document.createTextNode(text));
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

async function join() {
  const reply = await client.send("chat", { action: "join", room });
  // Watch the room's members: their presence now, then every change (ended by a reconnect).
  const now = await client.send("bester.presence.subscribe", { groups: [reply.group] });
  members = new Map(now.users.map((u) => [u.user, u.state]));
  showMembers();
  $("error").textContent = "";
}

// After a reconnect the server may be up before its chat handler: try again for a while.
async function rejoin(attempt = 0) {
  try {
    await join();
  } catch (e) {
    const retry = ["handler_not_running", "handler_unavailable", "handler_busy"].includes(e.code);
    if (retry && attempt < 20) {
      setTimeout(() => rejoin(attempt + 1), 250 * Math.min(attempt + 1, 8));
    } else {
      $("error").textContent = `${e.text ?? e.message} (${e.code})`;
    }
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").textContent = "";
  if (client) client.close();
  room = $("room").value;
  client = new BesterClient(url, { username: $("username").value, password: $("password").value });
  client.addEventListener("push", (e) => {
    const data = e.detail.data || {};
    if (data.room === room) line(data.text, data.from);
  });
  client.addEventListener("close", (e) => {
    if (e.detail.willReconnect) {
      $("status").textContent = `connection lost; reconnecting in ${e.detail.delay} ms`;
    }
  });
  client.addEventListener("presence", (e) => presence(e.detail));
  // Joined (and watched) again after each reconnect: subscriptions end with a connection.
  client.addEventListener("open", () => {
    if (!$("chat").hidden) rejoin();
  });
  try {
    await client.connect();
    await join();
    $("login-form").hidden = true;
    $("chat").hidden = false;
    line(`joined ${room}`, null, "system");
    $("text").focus();
  } catch (e) {
    $("error").textContent = `${e.text ?? e.message} (${e.code})`;
  }
});

$("say-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text) return;
  try {
    // The sender is one of the room's members: its copy comes back as the reply, not a push.
    const reply = await client.send("chat", { action: "say", room, text });
    if (reply && reply.room === room) line(reply.text, reply.from);
    $("text").value = "";
  } catch (e) {
    $("error").textContent = `${e.text ?? e.message} (${e.code})`;
  }
});
