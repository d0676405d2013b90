// The single-page app: every path serves index.html; the API is on /api/.
document.getElementById("f").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = document.getElementById("text").value;
  const res = await fetch("/api/feedback", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text }) });
  document.getElementById("out").textContent = JSON.stringify(await res.json(), null, 2);
});
