// sonalign API page: lists every endpoint of /openapi.json. Plain JS, no external requests.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const METHODS = ["get", "post", "put", "patch", "delete"];

  // A "$ref": "#/components/schemas/Name" resolved inside the schema document.
  function resolve(doc, node) {
    let seen = 0;
    while (node && node.$ref && seen++ < 20) {
      node = node.$ref.replace(/^#\//, "").split("/").reduce((obj, key) => (obj ? obj[key] : undefined), doc);
    }
    return node || {};
  }

  function typeOf(doc, schema) {
    schema = resolve(doc, schema);
    if (schema.enum) return schema.enum.map(String).join(" | ");
    if (schema.anyOf) return schema.anyOf.map((s) => typeOf(doc, s)).join(" | ");
    if (schema.type === "array") return `array of ${typeOf(doc, schema.items)}`;
    if (schema.format === "binary") return "file";
    return schema.type || "any";
  }

  // Query/path parameters, then the fields of a form or JSON body, as table rows.
  function parameters(doc, op) {
    const rows = (op.parameters || []).map((p) => {
      p = resolve(doc, p);
      const schema = resolve(doc, p.schema);
      return { name: p.name, where: p.in, type: typeOf(doc, schema), required: !!p.required,
               description: p.description || schema.description || "", fallback: schema.default };
    });
    const content = op.requestBody ? resolve(doc, op.requestBody).content || {} : {};
    for (const [mediaType, body] of Object.entries(content)) {
      const schema = resolve(doc, body.schema);
      const required = new Set(schema.required || []);
      for (const [name, field] of Object.entries(schema.properties || {})) {
        const f = resolve(doc, field);
        rows.push({ name, where: mediaType.includes("form") ? "form" : "body", type: typeOf(doc, f), required: required.has(name),
                    description: f.description || "", fallback: f.default });
      }
    }
    return rows;
  }

  // Text with `code` or ``code`` spans, built as nodes (never parsed as HTML).
  function withCode(el, text) {
    text.split(/``?([^`]+)``?/).forEach((part, i) => {
      if (i % 2) { const c = document.createElement("code"); c.textContent = part; el.append(c); }
      else if (part) el.append(part);
    });
    return el;
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function endpoint(doc, path, method, op) {
    const node = $("#endpoint-template").content.firstElementChild.cloneNode(true);
    $(".method", node).textContent = method.toUpperCase();
    $(".path", node).textContent = path;
    $(".summary", node).textContent = op.summary || "";
    withCode($(".description", node), op.description || "");
    const rows = parameters(doc, op);
    if (rows.length) {
      $(".params", node).hidden = false;
      for (const r of rows) {
        const tr = document.createElement("tr");
        const desc = r.description + (r.fallback !== undefined ? ` (default: ${JSON.stringify(r.fallback)})` : "");
        tr.append(cell(r.name), cell(r.where), cell(r.type), cell(r.required ? "yes" : "no"), withCode(cell(""), desc));
        $("tbody", node).append(tr);
      }
    }
    const codes = Object.keys(op.responses || {});
    $(".responses", node).textContent = codes.length ? `Responses: ${codes.join(", ")}` : "";
    return node;
  }

  async function main() {
    const intro = $("#intro");
    try {
      const res = await fetch("/openapi.json");
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const doc = await res.json();
      const info = doc.info || {};
      intro.textContent = `${info.title || "API"} ${info.version || ""}: ${info.description || ""}`.trim();
      const list = $("#endpoints");
      for (const [path, item] of Object.entries(doc.paths || {})) {
        for (const method of METHODS) {
          if (item[method]) list.append(endpoint(doc, path, method, item[method]));
        }
      }
      document.body.dataset.ready = "true";
    } catch (err) {
      intro.textContent = `Could not load /openapi.json: ${err.message}`;
      intro.dataset.kind = "error";
    }
  }

  main();
})();
