// mailserve web admin: a small page over the admin REST API (/api), no libraries.
// The session cookie is HttpOnly; state-changing calls carry the session's CSRF token.
"use strict";

const state = { csrf: null, account: null, selectedDomain: null };
const $ = (id) => document.getElementById(id);
const VIEWS = ["login", "status", "domains", "accounts", "aliases", "queue", "logs", "password"];

function say(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

async function api(method, path, body) {
  // X-Requested-With: the API then answers 401 without a Basic challenge (no browser dialog).
  const headers = { "X-Requested-With": "mailserve-admin" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.csrf && method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { showLogin(); throw new Error("please log in"); }
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(td, text, onclick, danger) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (danger) b.className = "danger";
  b.addEventListener("click", onclick);
  td.appendChild(b);
  return b;
}

function fill(tbodyId, items, render) {
  const body = $(tbodyId);
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    render(row, item);
    body.appendChild(row);
  }
}

function show(view) {
  for (const name of VIEWS) $(name + "-view").hidden = name !== view;
  $("nav").hidden = view === "login";
}

function showLogin() { state.csrf = null; show("login"); }

function mib(bytes) { return bytes ? (bytes / 1048576).toFixed(1) + " MiB" : "unlimited"; }

const loaders = {
  async status() {
    const s = await api("GET", "/api/status");
    const list = $("status-list");
    list.replaceChildren();
    const rows = [["Host name", s.hostname], ["Version", s.version], ["Up for", Math.round(s.uptime_seconds) + " s"],
      ["Domains", s.domains], ["Accounts", s.accounts], ["Aliases", s.aliases],
      ["Listeners", s.listeners.map((l) => `${l.protocol} ${l.addresses.join(" ")}`).join(", ")]];
    for (const [k, v] of rows) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      list.append(dt, dd);
    }
  },
  async domains() {
    const domains = await api("GET", "/api/domains");
    fill("domain-rows", domains, (row, d) => {
      cell(row, d.name); cell(row, d.catch_all || "-");
      const td = cell(row, "");
      button(td, "DNS records", () => showDNS(d.name));
      button(td, "Remove", async () => {
        if (!confirm(`Remove ${d.name}?`)) return;
        await run(() => api("DELETE", "/api/domains/" + encodeURIComponent(d.name)), `removed ${d.name}`);
        loaders.domains();
      }, true);
    });
    if (state.selectedDomain) await showDNS(state.selectedDomain);
  },
  async accounts() {
    const accounts = await api("GET", "/api/accounts");
    fill("account-rows", accounts, (row, a) => {
      cell(row, a.name + (a.role === "admin" ? " (admin)" : ""));
      cell(row, a.addresses.join(", ") || "-");
      cell(row, mib(a.quota_bytes));
      cell(row, a.enabled ? "yes" : "no");
      const td = cell(row, "");
      button(td, "Set quota", async () => {
        const value = prompt(`Quota of ${a.name} in MiB (0 = unlimited)`, String(Math.round(a.quota_bytes / 1048576)));
        if (value === null) return;
        await run(() => api("PUT", `/api/accounts/${encodeURIComponent(a.name)}/quota`,
          { bytes_limit: Math.round(Number(value) * 1048576) }), `quota of ${a.name} set`);
        loaders.accounts();
      });
      button(td, "Remove", async () => {
        if (!confirm(`Remove ${a.name} and all its mail?`)) return;
        await run(() => api("DELETE", "/api/accounts/" + encodeURIComponent(a.name)), `removed ${a.name}`);
        loaders.accounts();
      }, true);
    });
  },
  async aliases() {
    const aliases = await api("GET", "/api/aliases");
    fill("alias-rows", aliases, (row, a) => {
      cell(row, a.address); cell(row, a.targets.join(", "));
      button(cell(row, ""), "Remove", async () => {
        await run(() => api("DELETE", "/api/aliases/" + encodeURIComponent(a.address)), `removed ${a.address}`);
        loaders.aliases();
      }, true);
    });
  },
  async queue() {
    try {
      const entries = await api("GET", "/api/queue");
      $("queue-note").textContent = entries.length ? "" : "The queue is empty.";
      fill("queue-rows", entries, (row, e) => {
        cell(row, String(e.id));
        cell(row, e.mail_from || "<> (delivery report)");
        cell(row, e.recipients.map((r) => `${r.address} (${r.status})`).join(", "));
        cell(row, String(e.attempts));
        cell(row, new Date(e.next_attempt * 1000).toISOString());
        cell(row, e.last_error || "-", "value");
        const td = cell(row, "");
        button(td, "Retry", async () => {
          await run(() => api("POST", `/api/queue/${encodeURIComponent(e.id)}/retry`), `message ${e.id} will be retried now`);
          loaders.queue();
        });
        button(td, "Delete", async () => {
          if (!confirm(`Delete queued message ${e.id} without a bounce?`)) return;
          await run(() => api("DELETE", "/api/queue/" + encodeURIComponent(e.id)), `deleted message ${e.id}`);
          loaders.queue();
        }, true);
      });
    } catch (err) {
      $("queue-note").textContent = err.message;
      fill("queue-rows", [], () => {});
    }
  },
  async logs() {
    const form = new FormData($("log-form"));
    const query = new URLSearchParams({ level: form.get("level"), limit: "200" });
    if (form.get("contains")) query.set("contains", form.get("contains"));
    const entries = await api("GET", "/api/logs?" + query);
    fill("log-rows", entries, (row, e) => {
      cell(row, new Date(e.time * 1000).toISOString()); cell(row, e.level); cell(row, e.namespace); cell(row, e.message);
    });
  },
  async password() {},
};

async function showDNS(domain) {
  state.selectedDomain = domain;
  const records = await api("GET", `/api/domains/${encodeURIComponent(domain)}/dns`);
  $("dns-domain").textContent = domain;
  fill("dns-rows", records, (row, r) => { cell(row, r.name); cell(row, r.type); cell(row, r.value, "value"); });
  $("dns-box").hidden = false;
}

async function run(action, done) {
  try {
    const result = await action();
    say(done, false);
    return result;
  } catch (err) {
    say(err.message, true);
    return null;
  }
}

async function route() {
  const view = (location.hash || "#status").slice(1);
  if (!state.csrf) {
    try {
      const me = await api("GET", "/api/me");
      state.csrf = me.csrf_token || null;
      state.account = me.account;
    } catch (err) {
      showLogin();
      return;
    }
  }
  const name = VIEWS.includes(view) && view !== "login" ? view : "status";
  show(name);
  try { await loaders[name](); } catch (err) { say(err.message, true); }
}

function formValues(form) { return Object.fromEntries(new FormData(form).entries()); }

function bind() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.target);
    const response = await fetch("/admin/login", { method: "POST", headers: { "Content-Type": "application/json", "X-Requested-With": "mailserve-admin" },
      credentials: "same-origin", body: JSON.stringify({ login: v.login, password: v.password }) });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) { say((data.error && data.error.message) || "login failed", true); return; }
    state.csrf = data.csrf_token;
    say("", false);
    event.target.reset();
    if (location.hash === "#status" || !location.hash) route(); else location.hash = "#status";
  });
  $("logout").addEventListener("click", async () => {
    await fetch("/admin/logout", { method: "POST", headers: { "X-CSRF-Token": state.csrf || "", "X-Requested-With": "mailserve-admin" }, credentials: "same-origin" });
    showLogin();
  });
  $("domain-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.target);
    const body = { name: v.name.trim().toLowerCase() };
    if (v.description) body.description = v.description;
    const domain = await run(() => api("POST", "/api/domains", body), `added ${body.name}: publish the DNS records below`);
    if (domain) { state.selectedDomain = domain.name; event.target.reset(); loaders.domains(); }
  });
  $("dkim-generate").addEventListener("click", async () => {
    const domain = state.selectedDomain;
    await run(() => api("POST", `/api/domains/${encodeURIComponent(domain)}/dkim`, { algorithm: "rsa-sha256" }),
      `DKIM key generated for ${domain}`);
    showDNS(domain);
  });
  $("account-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.target);
    const body = { name: v.name.trim(), password: v.password, quota_bytes: Math.round(Number(v.quota || 0) * 1048576) };
    const address = (v.address || (v.name.includes("@") ? v.name : "")).trim().toLowerCase();
    if (address) body.addresses = [address];
    if (v.display_name) body.display_name = v.display_name;
    const account = await run(() => api("POST", "/api/accounts", body), `added ${body.name}`);
    if (account) { event.target.reset(); loaders.accounts(); }
  });
  $("alias-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.target);
    const targets = v.targets.split(",").map((t) => t.trim().toLowerCase()).filter(Boolean);
    const alias = await run(() => api("POST", "/api/aliases", { address: v.address.trim().toLowerCase(), targets }),
      `added ${v.address}`);
    if (alias) { event.target.reset(); loaders.aliases(); }
  });
  $("log-form").addEventListener("submit", (event) => { event.preventDefault(); loaders.logs(); });
  $("password-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.target);
    const ok = await run(() => api("POST", "/api/me/password", { current_password: v.current, new_password: v.new }),
      "password changed");
    if (ok) event.target.reset();
  });
  window.addEventListener("hashchange", route);
}

bind();
route();
