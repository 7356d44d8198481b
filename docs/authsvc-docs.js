// Starts Swagger UI on this service's own document. In a file of its own, not inline in
// the page, so the page's Content-Security-Policy can refuse every inline script.
//
// "Try it out" sends its requests with fetch() to this same origin, so the browser keeps
// the cookie POST /sessions sets and sends it with the next requests by itself: the page
// never sees it (HttpOnly), exactly like any other page of the site.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No "validate this document" badge: it would send the document to an outside site.
    validatorUrl: null,
  });
});
