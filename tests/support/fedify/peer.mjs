// A fediverse server built on Fedify (https://fedify.dev), for the interop tests: its own
// signatures (RFC 9421 and draft-cavage, double-knocking), its own inbox verification,
// its own actor documents. Usage: node peer.mjs PORT [authorized-fetch]; prints "ready"
// once it listens. With authorized-fetch, its actor is served only to signed GETs whose key
// belongs to an actor it can fetch (Mastodon's AUTHORIZED_FETCH, GoToSocial's default).
//   GET  /received          what its inbox accepted, as JSON
//   POST /send {"to", "inbox", "note"}  alice sends a Create(Note) to the actor "to" at
//                           "inbox"; answers 200, or 502 with Fedify's error
import http from "node:http";
import {
  Activity, Create, MemoryKvStore, Note, Person, createFederation, generateCryptoKeyPair,
} from "@fedify/fedify";

const port = Number(process.argv[2]);
const authorizedFetch = process.argv[3] === "authorized-fetch";
const base = `http://127.0.0.1:${port}`;
const federation = createFederation({ kv: new MemoryKvStore(), allowPrivateAddress: true });
const keys = [await generateCryptoKeyPair("RSASSA-PKCS1-v1_5"),
              await generateCryptoKeyPair("Ed25519")];
const received = [];

federation
  .setActorDispatcher("/users/{identifier}", async (ctx, identifier) => {
    if (identifier !== "alice") return null;
    const pairs = await ctx.getActorKeyPairs(identifier);
    return new Person({
      id: ctx.getActorUri(identifier), preferredUsername: identifier,
      inbox: ctx.getInboxUri(identifier),
      publicKey: pairs[0].cryptographicKey, assertionMethods: pairs.map((p) => p.multikey),
    });
  })
  .setKeyPairsDispatcher(async (ctx, identifier) => (identifier === "alice" ? keys : []))
  .authorize(async (ctx, identifier, signedKey, signedKeyOwner) =>
    !authorizedFetch || signedKeyOwner != null);

federation
  .setInboxListeners("/users/{identifier}/inbox", "/inbox")
  .on(Activity, async (ctx, activity) => {
    received.push({ id: activity.id?.href ?? null, type: activity.constructor.name,
                    actor: activity.actorId?.href ?? null });
  });

async function send(to, inbox, noteId) {
  const ctx = federation.createContext(new URL(base), undefined);
  const alice = ctx.getActorUri("alice");
  const activity = new Create({
    id: new URL(`${noteId}#create`), actor: alice,
    object: new Note({ id: new URL(noteId), attribution: alice, content: "from Fedify" }),
  });
  await ctx.sendActivity({ identifier: "alice" }, { id: new URL(to), inboxId: new URL(inbox) },
                         activity, { immediate: true });
}

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const url = new URL(req.url, base);
  try {
    if (url.pathname === "/received") {
      res.writeHead(200, { "Content-Type": "application/json" });
      return res.end(JSON.stringify(received));
    }
    if (url.pathname === "/send" && req.method === "POST") {
      const { to, inbox, note } = JSON.parse(body.toString());
      try {
        await send(to, inbox, note);
      } catch (error) {
        res.writeHead(502, { "Content-Type": "text/plain" });
        return res.end(String(error?.message ?? error));
      }
      res.writeHead(200, { "Content-Type": "text/plain" });
      return res.end("sent");
    }
    const request = new Request(url, {
      method: req.method, headers: req.headers,
      body: ["GET", "HEAD"].includes(req.method) ? undefined : body,
    });
    const response = await federation.fetch(request, { contextData: undefined });
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  } catch (error) {
    res.writeHead(500, { "Content-Type": "text/plain" });
    res.end(String(error?.stack ?? error));
  }
});
server.listen(port, "127.0.0.1", () => console.log("ready"));
