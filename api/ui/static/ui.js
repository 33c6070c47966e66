// The review UI's interactions: times in local time, live sightings, review buttons,
// enrollment by drag and drop. Every change is a call to the JSON API, authenticated by
// the cookie the login page set; pages and fragments are rendered by the server.
"use strict";

const enc = encodeURIComponent;

// ---------------------------------------------------------------- helpers
async function call(method, url, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    return { ok: false, status: 0, data: { detail: `network error: ${error.message}` } };
  }
  if (response.status === 401) location.reload(); // signed out meanwhile: to the login page
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : null;
  return { ok: response.ok, status: response.status, data };
}

// What the API said was wrong: its reason codes and message.
function problem(result) {
  const d = result.data || {};
  const reasons = (d.reasons || []).join(", ");
  const detail = d.detail || `HTTP ${result.status}`;
  return reasons ? `${reasons}: ${detail}` : detail;
}

// A server-rendered fragment, parsed (a <template> also parses table rows).
async function fragment(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (response.status === 401 || response.status === 403) {
    location.reload();
    return null;
  }
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  const holder = document.createElement("template");
  holder.innerHTML = await response.text();
  return holder.content;
}

function localTimes(root) {
  for (const el of root.querySelectorAll("time[data-ms]")) {
    const when = new Date(Number(el.dataset.ms));
    el.textContent = when.toLocaleString();
    el.title = when.toISOString();
  }
}

function formError(form, message) {
  const slot = form.querySelector("[data-form-error]");
  if (slot) slot.textContent = message;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// epoch ms -> the value of an <input type="datetime-local">, in local time
function localInputValue(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
    `T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// A readable id for a person created from a typed name: its slug and a random suffix
// (two people may share a name).
function newPersonId(name) {
  const slug = name.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase()
    .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "person";
  const random = crypto.getRandomValues(new Uint8Array(4));
  return `${slug}-${Array.from(random, (b) => pad(b.toString(16))).join("")}`;
}

// ---------------------------------------------------------------- people
function initCreatePerson() {
  const form = document.querySelector("[data-create-person]");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { display_name: form.elements.display_name.value.trim() };
    const id = form.elements.id.value.trim();
    if (id) body.id = id;
    const result = await call("POST", "/people", body);
    if (!result.ok) return formError(form, problem(result));
    location.assign(`/ui/people/${enc(result.data.id)}`);
  });
}

function initTemplates() {
  const gallery = document.querySelector("[data-templates]");
  if (!gallery) return;
  const personId = gallery.dataset.personId;
  gallery.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-remove-template]");
    if (!button || !confirm("Remove this template and its photo?")) return;
    button.disabled = true;
    const url = `/people/${enc(personId)}/faces/${enc(button.dataset.removeTemplate)}`;
    const result = await call("DELETE", url);
    if (!result.ok) {
      button.disabled = false;
      alert(`Not removed: ${problem(result)}`);
      return;
    }
    await refreshTemplates(gallery);
  });
}

async function refreshTemplates(gallery) {
  const content = await fragment(`/ui/people/${enc(gallery.dataset.personId)}/templates`);
  if (!content) return;
  localTimes(content);
  gallery.replaceChildren(content);
}

function initEnroll() {
  const section = document.querySelector("[data-enroll]");
  if (!section) return;
  const personId = section.dataset.personId;
  const zone = section.querySelector("[data-dropzone]");
  const input = zone.querySelector("input[type=file]");
  const results = section.querySelector("[data-upload-results]");
  let queue = Promise.resolve(); // one upload at a time, in the order given

  const enroll = (files) => {
    queue = queue.then(() => uploadEach(files));
  };
  zone.addEventListener("dragover", (event) => {
    event.preventDefault(); // allows the drop
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    enroll(Array.from(event.dataTransfer.files));
  });
  input.addEventListener("change", () => {
    enroll(Array.from(input.files));
    input.value = "";
  });

  // One request per photo, so that each photo gets its own answer (the API refuses a whole
  // request for one bad photo).
  async function uploadEach(files) {
    const face = section.querySelector("input[name=face]:checked").value;
    for (const file of files) {
      const item = document.createElement("li");
      item.dataset.file = file.name;
      item.textContent = `${file.name}: enrolling…`;
      results.append(item);
      const form = new FormData();
      form.append("image", file, file.name);
      if (face === "largest") form.append("largest_face", "true");
      if (face === "cropped") form.append("face_is_cropped", "true");
      const result = await call("POST", `/people/${enc(personId)}/faces`, form);
      item.className = result.ok ? "ok" : "refused";
      item.textContent = result.ok
        ? `${file.name}: enrolled`
        : `${file.name}: refused (${problem(result)})`;
    }
    const gallery = document.querySelector("[data-templates]");
    if (gallery) await refreshTemplates(gallery);
  }
}

// ---------------------------------------------------------------- sightings
function initFilters() {
  const form = document.querySelector("[data-filters]");
  if (!form) return;
  const pickers = form.querySelectorAll("[data-ms-field]");
  for (const picker of pickers) {
    const hidden = form.elements[picker.dataset.msField];
    if (hidden.value) picker.value = localInputValue(Number(hidden.value));
  }
  form.addEventListener("submit", () => {
    for (const picker of pickers) {
      const ms = picker.value ? new Date(picker.value).getTime() : NaN;
      form.elements[picker.dataset.msField].value = Number.isNaN(ms) ? "" : String(ms);
    }
  });
}

function initSightings() {
  const body = document.querySelector("[data-sightings]");
  if (!body) return;
  const empty = document.querySelector("[data-empty]");
  const live = document.querySelector("[data-live-status]");
  const rowOf = (id) => body.querySelector(`tr[data-sighting-id="${CSS.escape(id)}"]`);

  function place(row) {
    localTimes(row);
    const old = rowOf(row.dataset.sightingId);
    if (old) {
      // a row being reviewed is left alone: the review refreshes it
      if (old.dataset.version !== row.dataset.version && !old.hasAttribute("aria-busy")) {
        old.replaceWith(row);
      }
      return false;
    }
    const first = Number(row.dataset.firstMs); // newest first
    const after = Array.from(body.rows).find((r) => Number(r.dataset.firstMs) < first);
    body.insertBefore(row, after || null);
    return true;
  }

  async function poll() {
    const content = await fragment(body.dataset.pollUrl);
    if (!content) return;
    let added = 0;
    for (const row of content.querySelectorAll("tr[data-sighting-id]")) {
      if (place(row)) added += 1;
    }
    if (added) {
      empty.hidden = true;
      live.textContent = `${added} new sighting${added > 1 ? "s" : ""} at ${new Date().toLocaleTimeString()}.`;
    }
  }

  if (body.dataset.pollUrl) {
    const every = Number(body.dataset.pollMs) || 3000;
    const tick = async () => {
      if (document.visibilityState === "visible") {
        try {
          await poll();
        } catch (error) {
          live.textContent = `Live updates failed (${error.message}); retrying.`;
        }
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }

  async function refreshRow(id) {
    const content = await fragment(`/ui/sightings/${enc(id)}/row`);
    const fresh = content && content.querySelector("tr");
    const old = rowOf(id);
    if (fresh && old) {
      localTimes(fresh);
      old.replaceWith(fresh);
    }
  }

  // Run a review call for a row: busy meanwhile, its error in the row, then the new row.
  async function review(id, request, onError) {
    const row = rowOf(id);
    if (row) row.setAttribute("aria-busy", "true");
    try {
      const result = await request();
      if (!result.ok) {
        onError(problem(result));
        return false;
      }
      await refreshRow(id);
      return true;
    } finally {
      const now = rowOf(id);
      if (now) now.removeAttribute("aria-busy");
    }
  }

  const dialog = document.getElementById("assign-dialog");
  const assignForm = dialog && dialog.querySelector("[data-assign-form]");

  body.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr");
    const id = row.dataset.sightingId;
    if (button.dataset.action === "assign") {
      assignForm.reset();
      assignForm.elements.sighting_id.value = id;
      formError(assignForm, "");
      dialog.showModal();
      return;
    }
    button.disabled = true;
    const slot = row.querySelector("[data-row-error]");
    review(id, () => call("POST", `/sightings/${enc(id)}/reject`), (message) => {
      slot.textContent = message;
      button.disabled = false;
    });
  });

  if (!assignForm) return;
  dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
  assignForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = assignForm.elements.sighting_id.value;
    const chosen = assignForm.elements.person_id.value;
    const name = assignForm.elements.new_name.value.trim();
    if (Boolean(chosen) === Boolean(name)) {
      formError(assignForm, "Choose a person, or type a new person's name (not both).");
      return;
    }
    const payload = name ? { person_id: newPersonId(name), display_name: name }
      : { person_id: chosen };
    const done = await review(
      id,
      () => call("POST", `/sightings/${enc(id)}/assign`, payload),
      (message) => formError(assignForm, message),
    );
    if (done) dialog.close();
  });
}

// ---------------------------------------------------------------- unknowns
function initUnknowns() {
  for (const form of document.querySelectorAll("[data-enroll-cluster]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = form.elements.display_name.value.trim();
      const chosen = form.elements.person_id.selectedOptions[0];
      if (Boolean(name) === Boolean(chosen.value)) {
        formError(form, "Type a new person's name, or choose a person (not both).");
        return;
      }
      // an existing person keeps their name: it is sent because the route requires one
      const payload = name ? { display_name: name }
        : { display_name: chosen.dataset.name, person_id: chosen.value };
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      const result = await call("POST", `/unknowns/${enc(form.dataset.enrollCluster)}/enroll`, payload);
      if (!result.ok) {
        button.disabled = false;
        formError(form, problem(result));
        return;
      }
      const done = result.data;
      const said = document.createElement("p");
      said.className = "ok";
      said.setAttribute("role", "status");
      const link = document.createElement("a");
      link.href = `/ui/people/${enc(done.person_id)}`;
      link.textContent = done.display_name;
      said.append("Enrolled as ", link, `: ${done.template_ids.length} templates, ` +
        `${done.assigned.length} sightings assigned` +
        (done.refused.length ? `, ${done.refused.length} crops refused.` : "."));
      form.replaceWith(said);
    });
  }
}

localTimes(document);
initCreatePerson();
initTemplates();
initEnroll();
initFilters();
initSightings();
initUnknowns();
