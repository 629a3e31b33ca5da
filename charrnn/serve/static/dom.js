// What the page's modules share: element lookup and authorised JSON requests to the server.

export const $ = id => document.getElementById(id);

// Request headers, with the API key the user gave (this page, or remembered from an earlier visit).
export function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value || localStorage.getItem("charrnn-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

export async function fetchJSON(url) {
  const r = await fetch(url, { headers: headers() });
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error?.message || r.statusText);
  return r.json();
}
