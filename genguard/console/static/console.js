// One-key review and study answers. Served from /static so the CSP can forbid inline script.
(function () {
  "use strict";
  var body = document.body;
  var page = body.getAttribute("data-page");
  function typing(ev) {
    var t = ev.target;
    return t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT" || t.isContentEditable);
  }
  if (page === "item") {
    var keys = {g: "generated", e: "edited", a: "authentic", u: "unsure"};
    var busy = false;
    document.addEventListener("keydown", function (ev) {
      if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey || busy) return;
      var k = ev.key.toLowerCase();
      if (k === "n") {
        var next = body.getAttribute("data-next");
        window.location.href = next ? "/items/" + next : "/queues/" + body.getAttribute("data-queue");
        ev.preventDefault();
        return;
      }
      if (!keys[k]) return;
      ev.preventDefault();
      busy = true;
      var data = new URLSearchParams();
      data.set("decision", keys[k]);
      data.set("note", document.getElementById("note").value);
      fetch("/items/" + body.getAttribute("data-item") + "/decision", {
        method: "POST", credentials: "same-origin", body: data,
        headers: {"Accept": "application/json", "X-CSRF-Token": body.getAttribute("data-csrf")}
      }).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      }).then(function (j) {
        window.location.href = j.next ? "/items/" + j.next : "/queues/" + body.getAttribute("data-queue");
      }).catch(function (err) {
        busy = false;
        var d = document.getElementById("decision");
        d.textContent = "not saved: " + err.message;
      });
    });
  }
  if (page === "study") {
    var form = document.getElementById("trial");
    if (!form) return;
    // audio trials: space plays or pauses the clips in turn (left, then right), one at a time
    var clips = Array.prototype.slice.call(form.querySelectorAll("audio"));
    var turn = 0;
    // an audio trial is answered only once every clip has been played to its end (the server also refuses an
    // answer that comes sooner than the clips last)
    var heard = clips.map(function () { return false; });
    var answers = Array.prototype.slice.call(form.querySelectorAll('button[name="answer"]'));
    function ready() { return heard.every(function (h) { return h; }); }
    function gate() {
      answers.forEach(function (b) { b.disabled = !ready(); });
      var hint = document.getElementById("listen");
      if (hint && ready()) hint.classList.add("heard");
    }
    clips.forEach(function (clip, i) {
      clip.addEventListener("play", function () {
        clips.forEach(function (other) { if (other !== clip) other.pause(); });
        turn = i;
      });
      clip.addEventListener("ended", function () {
        heard[i] = true;
        gate();
        turn = (i + 1) % clips.length;
      });
    });
    if (clips.length) gate();
    document.addEventListener("keyup", function (ev) {  // a focused button acts on a space's key-up
      if (ev.key === " " && clips.length && !typing(ev)) ev.preventDefault();
    });
    document.addEventListener("keydown", function (ev) {
      if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (ev.key === " " && clips.length) {
        // handled here, also when a player or an answer button has the focus: a space must never answer
        ev.preventDefault();
        var playing = clips.filter(function (c) { return !c.paused; });
        if (playing.length) playing.forEach(function (c) { c.pause(); });
        else {
          var started = clips[turn].play();
          if (started && started.catch) started.catch(function () {});  // not loaded (yet): the player shows it
        }
        return;
      }
      var value = null;
      if (body.getAttribute("data-kind") === "2afc") {
        if (ev.key === "ArrowLeft") value = "left";
        if (ev.key === "ArrowRight") value = "right";
      } else if (/^[1-5]$/.test(ev.key)) {
        value = ev.key;
      }
      if (value === null) return;
      ev.preventDefault();
      var b = form.querySelector('button[value="' + value + '"]');
      if (b && !b.disabled) b.click();
    });
  }
})();
