/* A model page: ask before deleting a version. */
"use strict";

(function () {
  const form = document.getElementById("delete-form");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    const version = document.getElementById("delete-version").value;
    if (!window.confirm("Delete version " + version + "? Its files are removed for good.")) event.preventDefault();
  });
})();
