// loradex web catalog: the API token, the merge form, the card editor and live job progress.
// No framework and no inline handlers: the page's CSP allows scripts from this origin only.
// Everything user-supplied is written with textContent / attributes, never innerHTML.
(() => {
  "use strict";

  const TOKEN_KEY = "loradex.token";
  const TOKEN_COOKIE = "loradex_token"; // lets page views through when reads need a token
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const POLL_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const getToken = () => localStorage.getItem(TOKEN_KEY) || "";

  function setToken(token) {
    if (token) {
      localStorage.setItem(TOKEN_KEY, token);
      document.cookie = `${TOKEN_COOKIE}=${encodeURIComponent(token)}; path=/ui; SameSite=Strict`;
    } else {
      localStorage.removeItem(TOKEN_KEY);
      document.cookie = `${TOKEN_COOKIE}=; path=/ui; max-age=0; SameSite=Strict`;
    }
    showTokenState();
  }

  function authHeaders() {
    const token = getToken();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function errorText(body, status) {
    const e = body && body.error;
    return e ? `${e.code}: ${e.message}` : `HTTP ${status}`;
  }

  function uiBase() {
    const job = $("job");
    return (job && job.dataset.ui) || "/ui";
  }

  function refUrl(ref) {
    const [name, version] = ref.split("@");
    const base = `${uiBase()}/adapters/${encodeURIComponent(name)}`;
    return version ? `${base}/versions/${encodeURIComponent(version)}` : base;
  }

  // -- token widget (header) ------------------------------------------------------------------
  function showTokenState() {
    const state = $("token-state");
    if (state) state.textContent = getToken() ? "API token ✓" : "API token";
    for (const id of ["merge-token", "card-token"]) {
      const input = $(id);
      if (input && !input.value) input.value = getToken();
    }
  }

  function initTokenWidget() {
    const form = $("token-form");
    if (!form) return;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      setToken($("token-input").value.trim());
      $("token-input").value = "";
      $("token-box").open = false;
    });
    $("token-clear").addEventListener("click", () => setToken(""));
    showTokenState();
  }

  // -- merge form -----------------------------------------------------------------------------
  function showMethod(form, method) {
    for (const fs of form.querySelectorAll("fieldset.params")) {
      const on = fs.dataset.method === method;
      fs.hidden = !on;
      fs.disabled = !on; // disabled controls are neither validated nor sent
    }
  }

  function collectParams(fieldset) {
    const params = {};
    for (const input of fieldset.querySelectorAll("[data-param]")) {
      const raw = input.value.trim();
      if (raw === "") continue; // the method's default applies
      const kind = input.dataset.kind;
      let value = raw;
      if (kind === "int") value = parseInt(raw, 10);
      else if (kind === "float") value = parseFloat(raw);
      else if (kind === "choice" && (raw === "true" || raw === "false")) value = raw === "true";
      params[input.dataset.param] = value;
    }
    return params;
  }

  function splitList(text) {
    return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  }

  function mergeBody(form) {
    const method = $("merge-method").value;
    const fieldset = form.querySelector(`fieldset.params[data-method="${CSS.escape(method)}"]`);
    const body = {
      adapters: Array.from($("merge-adapters").selectedOptions, (o) => o.value),
      method,
      params: fieldset ? collectParams(fieldset) : {},
      name: $("merge-name").value.trim(),
      description: $("merge-description").value,
      tags: splitList($("merge-tags").value),
    };
    const weights = splitList($("merge-weights").value).map(Number);
    if (weights.length) body.weights = weights;
    return body;
  }

  // A form's write: save the token typed into it, send ``payload`` as JSON with the token, and
  // hand the reply to ``done``; a refusal shows the API's "code: message" under the form.
  async function sendForm({ prefix, method, url, payload, expect, done, buttonId }) {
    const error = $(`${prefix}-error`);
    const button = $(buttonId || `${prefix}-submit`);
    error.hidden = true;
    const token = $(`${prefix}-token`).value.trim();
    if (token) setToken(token);
    button.disabled = true;
    try {
      const response = await fetch(url, {
        method,
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(payload),
      });
      const body = await response.json().catch(() => null);
      if (response.status !== expect) throw new Error(errorText(body, response.status));
      done(body);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      button.disabled = false;
    }
  }

  function submitMerge(form, ev) {
    ev.preventDefault();
    sendForm({
      prefix: "merge",
      method: "POST",
      url: "/merges",
      payload: mergeBody(form),
      expect: 202,
      done: (job) => window.location.assign(`${uiBase()}/jobs/${encodeURIComponent(job.job_id)}`),
    });
  }

  // What the dry run answered, one line per fact (textContent only: names are user input).
  function planLines(plan) {
    const ranks = Object.values(plan.module_ranks);
    const low = Math.min(...ranks);
    const rank = low === plan.rank ? `${plan.rank}` : `${low}–${plan.rank} by module`;
    const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
    const what = plan.new_adapter ? "a new adapter" : "a new version of";
    const lines = [
      `Would merge ${plan.inputs.join(", ")} by ${plan.method} into ${what} ${plan.name}.`,
      `${ranks.length} modules merged, output rank ${rank}.`,
      `${plan.output_parameters.toLocaleString("en")} parameters (${mb(plan.output_bytes)} in ` +
        `fp32); the inputs hold ${plan.input_parameters.toLocaleString("en")}.`,
    ];
    if (plan.modules_skipped.length)
      lines.push(`${plan.modules_skipped.length} modules left out by the module policy.`);
    const partial = Object.keys(plan.modules_partial).length;
    if (partial) lines.push(`${partial} modules merged from only some inputs.`);
    if (plan.artifact_parameters !== null) {
      const share = Math.round((100 * plan.artifact_parameters) / plan.input_parameters);
      lines.push(`Revert artifact: ${plan.artifact_parameters.toLocaleString("en")} parameters ` +
        `(${share}% of the inputs').`);
    }
    if (plan.dense) lines.push("Dense path: a d_out × d_in matrix per input and module.");
    return lines;
  }

  function checkMerge(form) {
    const box = $("merge-plan");
    box.hidden = true;
    if (!form.reportValidity()) return;
    sendForm({
      prefix: "merge",
      buttonId: "merge-check",
      method: "POST",
      url: "/merges?dry_run=true",
      payload: mergeBody(form),
      expect: 200,
      done: (plan) => {
        const list = $("merge-plan-lines");
        list.replaceChildren(...planLines(plan).map((text) => {
          const item = document.createElement("li");
          item.textContent = text;
          return item;
        }));
        box.hidden = false;
        $("merge-check").disabled = false;
      },
    });
  }

  function initMergeForm() {
    const form = $("merge-form");
    if (!form) return;
    const method = $("merge-method");
    method.addEventListener("change", () => showMethod(form, method.value));
    showMethod(form, method.value);
    form.addEventListener("submit", (ev) => submitMerge(form, ev));
    $("merge-check").addEventListener("click", () => checkMerge(form));
  }

  // -- card editor (adapter page) ------------------------------------------------------------
  // A JSON merge patch of the fields the user changed only: a field left as rendered is not
  // sent, so an edit made elsewhere since the page loaded is not overwritten with stale text.
  function sameTags(a, b) {
    const norm = (text) => Array.from(new Set(splitList(text))).sort().join("\n");
    return norm(a) === norm(b);
  }

  function cardPatch() {
    const patch = {};
    const description = $("card-description");
    if (description.value !== description.defaultValue) {
      patch.description = description.value.trim() === "" ? null : description.value;
    }
    const tags = $("card-tags");
    if (!sameTags(tags.value, tags.defaultValue)) patch.tags = splitList(tags.value);
    const license = $("card-license");
    if (license.value.trim() !== license.defaultValue.trim()) {
      patch.license = license.value.trim() === "" ? null : license.value.trim();
    }
    return patch;
  }

  function submitCard(form, ev) {
    ev.preventDefault();
    const status = $("card-status");
    status.hidden = true;
    const patch = cardPatch();
    if (Object.keys(patch).length === 0) {
      $("card-error").hidden = true;
      status.textContent = "Nothing changed.";
      status.hidden = false;
      return;
    }
    sendForm({
      prefix: "card",
      method: "PATCH",
      url: `/adapters/${encodeURIComponent(form.dataset.name)}`,
      payload: patch,
      expect: 200,
      done: () => window.location.reload(), // the page, search included, shows the saved card
    });
  }

  function initCardForm() {
    const form = $("card-form");
    if (form) form.addEventListener("submit", (ev) => submitCard(form, ev));
  }

  // -- job page -------------------------------------------------------------------------------
  function showJob(box, job) {
    box.dataset.state = job.state;
    const state = $("job-state");
    state.textContent = job.state;
    state.className = `state-${job.state}`;
    $("job-progress").value = job.progress;
    $("job-percent").textContent = `${Math.round(job.progress * 100)}%`;
    $("job-message").textContent = job.message || "";
    if (job.result) {
      const link = $("job-result-link");
      link.textContent = job.result;
      link.setAttribute("href", refUrl(job.result));
      $("job-result").hidden = false;
    }
    if (job.error) {
      $("job-error").textContent = job.error;
      $("job-error").hidden = false;
    }
    if (TERMINAL.has(job.state)) {
      $("job-transport").textContent = "finished";
      const cancel = $("job-cancel");
      if (cancel) cancel.hidden = true;
    }
  }

  function pollJob(box, id) {
    $("job-transport").textContent = "polling";
    const tick = async () => {
      try {
        const response = await fetch(`/jobs/${encodeURIComponent(id)}`, { headers: authHeaders() });
        const body = await response.json();
        if (!response.ok) throw new Error(errorText(body, response.status));
        showJob(box, body);
        if (TERMINAL.has(body.state)) return;
      } catch (err) {
        $("job-transport").textContent = `polling (${err.message})`;
      }
      setTimeout(tick, POLL_MS);
    };
    tick();
  }

  function followJob(box) {
    const id = box.dataset.jobId;
    if (TERMINAL.has(box.dataset.state)) return;
    if (!window.EventSource) {
      pollJob(box, id);
      return;
    }
    const events = new EventSource(`/jobs/${encodeURIComponent(id)}/events`);
    $("job-transport").textContent = "live (server-sent events)";
    events.addEventListener("job", (ev) => {
      const job = JSON.parse(ev.data);
      showJob(box, job);
      if (TERMINAL.has(job.state)) events.close();
    });
    events.onerror = () => {
      // The stream ended early or was refused (e.g. reads need a token, which EventSource
      // cannot send): fall back to polling with the Authorization header.
      events.close();
      if (!TERMINAL.has(box.dataset.state)) pollJob(box, id);
    };
  }

  function initJobPage() {
    const box = $("job");
    if (!box) return;
    followJob(box);
    const cancel = $("job-cancel");
    if (!cancel) return;
    cancel.addEventListener("click", async () => {
      const response = await fetch(`/jobs/${encodeURIComponent(box.dataset.jobId)}/cancel`, {
        method: "POST",
        headers: authHeaders(),
      });
      const body = await response.json().catch(() => null);
      if (response.ok) showJob(box, body);
      else {
        $("job-error").textContent = errorText(body, response.status);
        $("job-error").hidden = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    initTokenWidget();
    initMergeForm();
    initCardForm();
    initJobPage();
  });
})();
